package web

import (
	"fmt"
	"html/template"
	"math"
	"strconv"
	"strings"
	"time"
)

// Charts are SVG drawn here, on the server: no script, readable without
// colour (every series also has its own marker shape and dash pattern),
// with axes, units and a legend. The palette is Okabe and Ito's, made
// for colour-blind readers; each colour has at least 3:1 contrast on
// white.

// palette: blue, vermillion, bluish green, reddish purple, orange, black.
var palette = []string{"#0072B2", "#D55E00", "#009E73", "#CC79A7", "#B26B00", "#222222"}

var dashes = []string{"", "6 3", "2 3", "8 3 2 3", "4 4", ""}

// series is one line of a chart.
type series struct {
	Name   string
	Values []float64
}

// chart is a line chart over time buckets.
type chart struct {
	ID     string // unique on the page: ids of its title and description
	Title  string
	Unit   string // of the y axis: "copies per day"
	Starts []time.Time
	Step   time.Duration
	Series []series
}

const (
	chartW, chartH         = 960, 250
	padL, padR, padT, padB = 56, 16, 16, 40
)

// niceMax returns a round axis maximum ≥ v and its tick step.
func niceMax(v float64) (float64, float64) {
	if v <= 0 {
		return 4, 1
	}
	raw := v / 4
	mag := math.Pow(10, math.Floor(math.Log10(raw)))
	var step float64
	for _, m := range []float64{1, 2, 2.5, 5, 10} {
		step = m * mag
		if step >= raw {
			break
		}
	}
	if step < 1 {
		step = 1
	}
	return step * math.Ceil(v/step), step
}

// SVG renders the chart.
func (c *chart) SVG() template.HTML {
	var b strings.Builder
	n := len(c.Starts)
	max := 0.0
	for _, s := range c.Series {
		for _, v := range s.Values {
			max = math.Max(max, v)
		}
	}
	top, step := niceMax(max)
	pw, ph := float64(chartW-padL-padR), float64(chartH-padT-padB)
	x := func(i int) float64 {
		if n <= 1 {
			return padL + pw/2
		}
		return padL + pw*float64(i)/float64(n-1)
	}
	y := func(v float64) float64 { return padT + ph - ph*v/top }
	esc := template.HTMLEscapeString
	fmt.Fprintf(&b, `<svg class="chart" viewBox="0 0 %d %d" role="img" aria-labelledby="%s-t %s-d" xmlns="http://www.w3.org/2000/svg">`, chartW, chartH, c.ID, c.ID)
	fmt.Fprintf(&b, `<title id="%s-t">%s</title><desc id="%s-d">%s over time, %s; the table below the chart holds the same figures.</desc>`,
		c.ID, esc(c.Title), c.ID, esc(c.Unit), esc(c.legendText()))
	// Grid and y axis.
	for v := 0.0; v <= top+step/2; v += step {
		yy := y(v)
		fmt.Fprintf(&b, `<line class="grid" x1="%d" x2="%d" y1="%.1f" y2="%.1f"/>`, padL, chartW-padR, yy, yy)
		fmt.Fprintf(&b, `<text class="tick" x="%d" y="%.1f" text-anchor="end" dominant-baseline="middle">%s</text>`, padL-6, yy, shortNum(v))
	}
	fmt.Fprintf(&b, `<text class="unit" x="%d" y="%d" transform="rotate(-90 %d %d)" text-anchor="middle">%s</text>`,
		12, padT+int(ph/2), 12, padT+int(ph/2), esc(c.Unit))
	// x axis: at most 8 labels.
	fmt.Fprintf(&b, `<line class="axis" x1="%d" x2="%d" y1="%.1f" y2="%.1f"/>`, padL, chartW-padR, y(0), y(0))
	every := 1
	if n > 8 {
		every = (n + 7) / 8
	}
	for i := 0; i < n; i += every {
		fmt.Fprintf(&b, `<line class="axis" x1="%.1f" x2="%.1f" y1="%.1f" y2="%.1f"/>`, x(i), x(i), y(0), y(0)+4)
		fmt.Fprintf(&b, `<text class="tick" x="%.1f" y="%d" text-anchor="middle">%s</text>`, x(i), chartH-padB+18, esc(bucketLabel(c.Starts[i], c.Step, i == 0)))
	}
	unitX := "UTC days"
	if c.Step < 24*time.Hour {
		unitX = "UTC hours"
	}
	fmt.Fprintf(&b, `<text class="unit" x="%d" y="%d" text-anchor="end">%s</text>`, chartW-padR, chartH-4, unitX)
	// The series, the first (the main one) drawn last so it stays on
	// top where lines meet; the ones under it a little wider, so they
	// show at its edges.
	for si := len(c.Series) - 1; si >= 0; si-- {
		s := c.Series[si]
		col, dash := palette[si%len(palette)], dashes[si%len(dashes)]
		width := 2.5 + 0.8*float64(min(si, 2))
		var pts []string
		for i, v := range s.Values {
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", x(i), y(v)))
		}
		da := ""
		if dash != "" {
			da = ` stroke-dasharray="` + dash + `"`
		}
		fmt.Fprintf(&b, `<g class="series"><polyline fill="none" stroke="%s" stroke-width="%.1f"%s points="%s"/>`, col, width, da, strings.Join(pts, " "))
		if n <= 62 {
			for i, v := range s.Values {
				b.WriteString(marker(si, x(i), y(v), col))
			}
		}
		b.WriteString(`</g>`)
	}
	b.WriteString(`</svg>`)
	return template.HTML(b.String())
}

// Legend renders the chart's legend as HTML (the same marker and dash as
// the lines).
func (c *chart) Legend() template.HTML {
	var b strings.Builder
	b.WriteString(`<ul class="legend">`)
	for si, s := range c.Series {
		col, dash := palette[si%len(palette)], dashes[si%len(dashes)]
		da := ""
		if dash != "" {
			da = ` stroke-dasharray="` + dash + `"`
		}
		total := 0.0
		for _, v := range s.Values {
			total += v
		}
		fmt.Fprintf(&b, `<li><svg viewBox="0 0 36 14" width="36" height="14" aria-hidden="true"><line x1="1" x2="35" y1="7" y2="7" stroke="%s" stroke-width="2.5"%s/>%s</svg>%s <span class="num">%s</span></li>`,
			col, da, marker(si, 18, 7, col), template.HTMLEscapeString(s.Name), fmtInt(uint64(total)))
	}
	b.WriteString(`</ul>`)
	return template.HTML(b.String())
}

func (c *chart) legendText() string {
	names := make([]string, len(c.Series))
	for i, s := range c.Series {
		names[i] = s.Name
	}
	return strings.Join(names, ", ")
}

// Rows are the chart's figures as table rows (for the table under it).
func (c *chart) Rows() [][]string {
	rows := make([][]string, len(c.Starts))
	for i, t := range c.Starts {
		row := []string{bucketLabel(t, c.Step, true)}
		for _, s := range c.Series {
			row = append(row, fmtInt(uint64(s.Values[i])))
		}
		rows[i] = row
	}
	return rows
}

// marker draws series si's marker shape at (x, y).
func marker(si int, x, y float64, col string) string {
	switch si % 4 {
	case 0:
		return fmt.Sprintf(`<circle cx="%.1f" cy="%.1f" r="3.5" fill="%s"/>`, x, y, col)
	case 1:
		return fmt.Sprintf(`<rect x="%.1f" y="%.1f" width="7" height="7" fill="%s"/>`, x-3.5, y-3.5, col)
	case 2:
		return fmt.Sprintf(`<path d="M%.1f %.1fl4 7h-8z" fill="%s"/>`, x, y-4.5, col)
	}
	return fmt.Sprintf(`<path d="M%.1f %.1fl4 4-4 4-4-4z" fill="%s"/>`, x, y-4, col)
}

func bucketLabel(t time.Time, step time.Duration, full bool) string {
	t = t.UTC()
	if step < 24*time.Hour {
		if full || t.Hour() == 0 {
			return t.Format("Jan 2 15:00")
		}
		return t.Format("15:00")
	}
	return t.Format("Jan 2")
}

// shortNum writes an axis value: 950, 1.2k, 3M.
func shortNum(v float64) string {
	switch {
	case v >= 1e6:
		return strconv.FormatFloat(v/1e6, 'f', -1, 64) + "M"
	case v >= 1e4:
		return strconv.FormatFloat(v/1e3, 'f', -1, 64) + "k"
	}
	return strconv.FormatFloat(v, 'f', -1, 64)
}

// fmtInt writes a count with thin separators: 1 234 567.
func fmtInt(n uint64) string {
	s := strconv.FormatUint(n, 10)
	if len(s) <= 4 {
		return s
	}
	var b strings.Builder
	pre := len(s) % 3
	if pre > 0 {
		b.WriteString(s[:pre])
	}
	for i := pre; i < len(s); i += 3 {
		if b.Len() > 0 {
			b.WriteString("\u202f")
		}
		b.WriteString(s[i : i+3])
	}
	return b.String()
}

func itoa(n int) string { return strconv.Itoa(n) }
