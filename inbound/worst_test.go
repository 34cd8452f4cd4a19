package inbound
import ("strings";"testing";"fmt")
func BenchmarkWorstCase(b0 *testing.B) {
	var b strings.Builder
	b.WriteString("From: MAILER-DAEMON@x.example\r\nSubject: failure notice\r\n\r\nHi. This is the qmail-send program at x.\r\n")
	for i := 0; i < 3000; i++ { fmt.Fprintf(&b, "<user%d@rcpt.example>:\r\n\r\n", i) }
	b.WriteString(strings.Repeat("blah blah user@x.example 550 5.1.1 stuff\r\n", 5000))
	s := b.String()
	for i := 0; i < b0.N; i++ { Classify(strings.NewReader(s), Envelope{}) }
}
