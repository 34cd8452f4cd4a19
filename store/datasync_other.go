//go:build !(linux && (amd64 || arm64 || riscv64 || loong64 || ppc64le))

package store

import (
	"errors"
	"os"
	"sync/atomic"
)

// dataSyncer flushes files' data to stable storage; elsewhere than Linux
// on the machines datasync_linux.go knows, with fdatasync(2) on Linux
// and fsync elsewhere.
type dataSyncer struct{}

func newDataSyncer() *dataSyncer            { return &dataSyncer{} }
func (s *dataSyncer) sync(f *os.File) error { return fdatasync(f) }
func (s *dataSyncer) close() error          { return nil }
func (s *dataSyncer) aio() bool             { return false }

var forceBlockingSync atomic.Bool

func aioLayout() [2]uintptr { return [2]uintptr{} }

func aioAvailable() error { return errors.ErrUnsupported }
