package smtpd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/emersion/go-smtp"

	"github.com/trackrelay/trackrelay/mime"
)

func TestReplyError(t *testing.T) {
	secret := errors.New("open /var/spool/secret-path: permission denied")
	custom := &smtp.SMTPError{Code: 450, EnhancedCode: smtp.EnhancedCode{4, 2, 0}, Message: "mailbox busy"}
	tests := []struct {
		name    string
		err     error
		code    int
		enh     smtp.EnhancedCode
		text    string // in the reply
		logged  bool   // the detail reaches the log
		notText string // never in the reply
	}{
		{"nil", nil, 0, smtp.EnhancedCode{}, "", false, ""},
		{"smtp error kept", custom, 450, smtp.EnhancedCode{4, 2, 0}, "mailbox busy", false, ""},
		{"wrapped smtp error unwrapped", fmt.Errorf("spool: %w", custom), 450, smtp.EnhancedCode{4, 2, 0}, "mailbox busy", false, ""},
		{"smtp error without enhanced code", &smtp.SMTPError{Code: 554, Message: "no"}, 554, smtp.EnhancedCode{5, 0, 0}, "no", false, ""},
		{"control header", fmt.Errorf("spool: %w", &mime.ControlError{Header: "x-smtpeter-trackclicks", Value: "maybe"}),
			550, smtp.EnhancedCode{5, 6, 0}, "Header x-smtpeter-trackclicks: value must be", false, "maybe"},
		{"control header with junk name", &mime.ControlError{Header: "x-smtpeter-\r\nbad", Value: "v"},
			550, smtp.EnhancedCode{5, 6, 0}, "x-smtpeter-??bad", false, "\r\n"},
		{"too big", fmt.Errorf("spool: write: %w", ErrTooBig), 552, smtp.EnhancedCode{5, 3, 4}, "the limit is 1000 bytes", false, ""},
		{"anything else", fmt.Errorf("spool: %w", secret), 451, smtp.EnhancedCode{4, 3, 0}, "try again later", true, "secret-path"},
		{"cancelled", context.Canceled, 451, smtp.EnhancedCode{4, 3, 0}, "try again later", true, "canceled"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var logs strings.Builder
			log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
			got := replyError(log, "data", tt.err, 1000)
			if tt.err == nil {
				if got != nil {
					t.Fatalf("got %v for nil", got)
				}
				return
			}
			se, ok := got.(*smtp.SMTPError)
			if !ok {
				t.Fatalf("got %T %v, want an unwrapped *smtp.SMTPError", got, got)
			}
			if se.Code != tt.code || se.EnhancedCode != tt.enh || !strings.Contains(se.Message, tt.text) {
				t.Errorf("got %d %v %q, want %d %v containing %q", se.Code, se.EnhancedCode, se.Message, tt.code, tt.enh, tt.text)
			}
			if tt.notText != "" && strings.Contains(se.Message, tt.notText) {
				t.Errorf("reply %q leaks %q", se.Message, tt.notText)
			}
			if logged := strings.Contains(logs.String(), "smtp command failed"); logged != tt.logged {
				t.Errorf("logged = %v, want %v: %s", logged, tt.logged, logs.String())
			}
			if se == custom && tt.enh != custom.EnhancedCode {
				t.Error("the shared error value was modified")
			}
		})
	}
	if custom.EnhancedCode != (smtp.EnhancedCode{4, 2, 0}) {
		t.Error("custom error modified")
	}
}
