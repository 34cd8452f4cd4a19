package smtpd

import (
	"context"
	"errors"
	"log/slog"
	"strconv"
	"strings"

	"github.com/emersion/go-smtp"

	"github.com/trackrelay/trackrelay/mime"
)

// ErrTooBig is returned (possibly wrapped) by a Submitter or by the body
// reader handed to it when a message exceeds the size limit. The SMTP side
// answers 552 5.3.4.
var ErrTooBig = errors.New("smtpd: message exceeds the size limit")

// ErrInsufficientStorage is returned (possibly wrapped) by the spool when
// the disk holding it is below its free-space reserve, or full. The SMTP
// side answers 452 4.3.1; the message can be sent again later.
var ErrInsufficientStorage = errors.New("smtpd: spool: not enough free disk space")

// Replies the session gives. go-smtp writes an *smtp.SMTPError as it is,
// and only when it is not wrapped, so every error leaving a session method
// is one of these or passes through replyError.
var (
	errAuthRequired = &smtp.SMTPError{
		Code:         530,
		EnhancedCode: smtp.EnhancedCode{5, 7, 0},
		Message:      "Authentication required: AUTH with the credential of your application first",
	}
	errTLSRequired = &smtp.SMTPError{
		Code:         530,
		EnhancedCode: smtp.EnhancedCode{5, 7, 0},
		Message:      "Must issue a STARTTLS command first (or use the implicit TLS port)",
	}
	errAuthFailed = &smtp.SMTPError{
		Code:         535,
		EnhancedCode: smtp.EnhancedCode{5, 7, 8},
		Message:      "Authentication credentials invalid",
	}
	errAuthTempFail = &smtp.SMTPError{
		Code:         454,
		EnhancedCode: smtp.EnhancedCode{4, 7, 0},
		Message:      "Temporary authentication failure, try again later",
	}
	errAuthMalformed = &smtp.SMTPError{
		Code:         501,
		EnhancedCode: smtp.EnhancedCode{5, 5, 2},
		Message:      "Malformed AUTH response",
	}
	errAuthInTransaction = &smtp.SMTPError{
		Code:         503,
		EnhancedCode: smtp.EnhancedCode{5, 5, 1},
		Message:      "AUTH is not allowed during a mail transaction",
	}
	errBadSender = &smtp.SMTPError{
		Code:         553,
		EnhancedCode: smtp.EnhancedCode{5, 1, 7},
		Message:      "Bad sender address syntax: want local@domain",
	}
	errBadRecipient = &smtp.SMTPError{
		Code:         553,
		EnhancedCode: smtp.EnhancedCode{5, 1, 3},
		Message:      "Bad recipient address syntax: want local@domain",
	}
	errNeedUTF8 = &smtp.SMTPError{
		Code:         553,
		EnhancedCode: smtp.EnhancedCode{5, 6, 7},
		Message:      "Non-ASCII address requires MAIL FROM with SMTPUTF8",
	}
	errNoTransaction = &smtp.SMTPError{
		Code:         503,
		EnhancedCode: smtp.EnhancedCode{5, 5, 1},
		Message:      "Bad sequence of commands: MAIL and RCPT first",
	}
	errLocalFailure = &smtp.SMTPError{
		Code:         451,
		EnhancedCode: smtp.EnhancedCode{4, 3, 0},
		Message:      "Local error, message not accepted; try again later",
	}
	errNoStorage = &smtp.SMTPError{
		Code:         452,
		EnhancedCode: smtp.EnhancedCode{4, 3, 1},
		Message:      "Insufficient system storage: the relay is low on disk space; try again later",
	}
)

// replyError is the error boundary of the SMTP session: every error that
// leaves a session method passes here. It keeps a real *smtp.SMTPError
// (returned unwrapped, as go-smtp needs), maps a *mime.ControlError to
// 550 5.6.0 naming the header, ErrTooBig to 552 5.3.4, and everything else
// to 451 4.3.0 with a generic text, logging the detail (never the body).
func replyError(log *slog.Logger, op string, err error, maxBytes int64) error {
	if err == nil {
		return nil
	}
	var se *smtp.SMTPError
	if errors.As(err, &se) {
		if se.EnhancedCode == smtp.EnhancedCodeNotSet || se.EnhancedCode == smtp.NoEnhancedCode {
			// Keep the code, but every reply carries an enhanced code.
			c := *se
			c.EnhancedCode = smtp.EnhancedCode{se.Code / 100, 0, 0}
			se = &c
		}
		return se
	}
	var ce *mime.ControlError
	if errors.As(err, &ce) {
		return &smtp.SMTPError{
			Code:         550,
			EnhancedCode: smtp.EnhancedCode{5, 6, 0},
			Message:      controlReply(ce),
		}
	}
	if errors.Is(err, ErrTooBig) {
		return tooBig(maxBytes)
	}
	if errors.Is(err, ErrInsufficientStorage) {
		log.Warn("smtp message refused: low on disk space", "op", op, "err", err)
		return errNoStorage
	}
	level := slog.LevelError
	if errors.Is(err, context.Canceled) || errors.Is(err, smtp.ErrDataReset) {
		level = slog.LevelInfo // the client or a shutdown ended it
	}
	log.Log(context.Background(), level, "smtp command failed", "op", op, "err", err)
	return errLocalFailure
}

// lineTooLong is the refusal of a message with a line longer than go-smtp
// reads (its MaxLineLength; the connection is closed after it, as go-smtp
// cannot find the next command). It is permanent, so that a client does
// not send the same message for ever.
func lineTooLong(maxLine int) *smtp.SMTPError {
	return &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 6, 0},
		Message: "Message has a line longer than " + strconv.Itoa(maxLine) + " bytes; wrap its lines or encode it (base64 or quoted-printable)"}
}

func tooBig(maxBytes int64) *smtp.SMTPError {
	msg := "Message too big"
	if maxBytes > 0 {
		msg += ": the limit is " + strconv.FormatInt(maxBytes, 10) + " bytes"
	}
	return &smtp.SMTPError{Code: 552, EnhancedCode: smtp.EnhancedCode{5, 3, 4}, Message: msg}
}

// printable keeps s safe to put in a reply line: printable ASCII only, at
// most n bytes.
func printable(s string, n int) string {
	var b strings.Builder
	for i := 0; i < len(s) && b.Len() < n; i++ {
		if c := s[i]; c >= 0x21 && c < 0x7f {
			b.WriteByte(c)
		} else {
			b.WriteByte('?')
		}
	}
	return b.String()
}

// controlReply words the 5.6.0 refusal of a bad control header.
func controlReply(ce *mime.ControlError) string {
	if ce.Reason != "" {
		return "Header " + printable(ce.Header, 64) + ": " + printable(ce.Reason, 80)
	}
	return "Header " + printable(ce.Header, 64) + ": value must be true/false, yes/no, on/off or 1/0"
}
