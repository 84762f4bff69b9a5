//! Drawing for `lwsysctl plot`: the page layout (label column, timeline,
//! row heights), the header with its legend, the time axis, and one group
//! of rows per state, from the `Model` built in `plot.rs`.

use std::fmt::Write as _;

use super::{clip, esc, ms, Group, Lane, Mark, Model};

/// Width of the label column, of the timeline, and the row heights.
const LABEL_W: f64 = 270.0;
const TIMELINE_W: f64 = 860.0;
const RIGHT_PAD: f64 = 40.0;
const HEAD_H: f64 = 122.0;
const STATE_H: f64 = 22.0;
const NOTIFIER_H: f64 = 16.0;
/// Client strings longer than this are cut (in characters) on the page;
/// tooltips keep a longer cut.
const CLIP_TEXT: usize = 48;
const CLIP_TITLE: usize = 300;

const STYLE: &str = "text{font-family:'DejaVu Sans',Verdana,sans-serif;font-size:12px;fill:#222}\
.state{font-weight:bold}.when{fill:#555}.small{font-size:10px;fill:#444}\
.title{font-size:16px;font-weight:bold}.notifier{fill:#333}\
.longest{fill:#7b1fa2;font-weight:bold}.defer-text{fill:#8a4b00}\
.deny-text{fill:#b71c1c;font-weight:bold}.grid{stroke:#e4e4e4;stroke-width:1}\
.axis{font-size:10px;fill:#666}.span{fill:#cfe0f5}.entered{fill:#1f4e8c}\
.consent{fill:#3b7dd8}.inline{fill:#888}.deferred{fill:url(#hatch);stroke:#e08a00}\
.deny{fill:#d32f2f}.hold{stroke:#7b1fa2;stroke-width:2}";

impl Model {
    fn x(&self, t: u64) -> f64 {
        let span = self.t_end.saturating_sub(self.t0).max(1000) as f64;
        LABEL_W + (t.saturating_sub(self.t0) as f64) / span * TIMELINE_W
    }

    fn ms(&self, t: u64) -> String {
        ms(t.saturating_sub(self.t0))
    }

    /// The whole document.
    pub(super) fn svg(&self, state: &str, skipped: usize) -> String {
        let rows: f64 = self
            .groups
            .iter()
            .map(|g| STATE_H + NOTIFIER_H * g.lanes.len() as f64)
            .sum::<f64>()
            .max(STATE_H);
        let width = LABEL_W + TIMELINE_W + RIGHT_PAD;
        let height = (HEAD_H + rows + 36.0).ceil();
        let mut s = String::new();
        let _ = write!(
            s,
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<svg xmlns=\"http://www.w3.org/2000/svg\" \
             width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\">\n\
             <style>{STYLE}</style>\n<defs><pattern id=\"hatch\" width=\"6\" height=\"6\" \
             patternUnits=\"userSpaceOnUse\" patternTransform=\"rotate(45)\">\
             <rect width=\"6\" height=\"6\" fill=\"#ffe3b0\"/><line x1=\"0\" y1=\"0\" x2=\"0\" \
             y2=\"6\" stroke=\"#f0a030\" stroke-width=\"3\"/></pattern></defs>\n\
             <rect width=\"100%\" height=\"100%\" fill=\"#fff\"/>\n"
        );
        self.header(&mut s, state, skipped);
        let top = HEAD_H;
        let bottom = HEAD_H + rows;
        self.axis(&mut s, top, bottom);
        let mut y = top;
        for g in &self.groups {
            self.group(&mut s, g, y);
            y += STATE_H + NOTIFIER_H * g.lanes.len() as f64;
        }
        if self.groups.is_empty() {
            let _ = writeln!(s, "<text x=\"10\" y=\"{}\">no consent rounds yet</text>", top + 15.0);
        }
        s.push_str("</svg>\n");
        s
    }

    fn header(&self, s: &mut String, state: &str, skipped: usize) {
        let span = self.t_end.saturating_sub(self.t0);
        let rounds: usize = self.groups.iter().map(|g| g.round_starts.len()).sum();
        let title = match self.groups.first() {
            Some(a) => {
                format!("lwsys boot from {}: {rounds} consent rounds in {}", a.target, ms(span))
            }
            None => "lwsys boot".to_owned(),
        };
        let _ = writeln!(
            s,
            "<text class=\"title\" x=\"10\" y=\"22\">{}</text>",
            esc(&title, CLIP_TITLE)
        );
        let mut sub = format!("state now: {}", clip(state, CLIP_TEXT));
        if skipped > 0 {
            sub.push_str(&format!("; {skipped} journal entries unreadable"));
        }
        let _ =
            writeln!(s, "<text class=\"small\" x=\"10\" y=\"40\">{}</text>", esc(&sub, CLIP_TITLE));
        // Legend: one swatch per kind of mark.
        let items = [
            ("<rect class=\"span\" width=\"22\" height=\"10\"/>", "from first ask to entered"),
            ("<rect class=\"entered\" width=\"3\" height=\"10\"/>", "state entered"),
            ("<rect class=\"consent\" width=\"22\" height=\"10\"/>", "consent (actor notifier)"),
            ("<rect class=\"inline\" width=\"2\" height=\"10\"/>", "inline notifier"),
            ("<rect class=\"deferred\" width=\"22\" height=\"10\"/>", "deferred (reason shown)"),
            ("<rect class=\"deny\" width=\"22\" height=\"10\"/>", "denied"),
        ];
        let mut x = 10.0;
        for (swatch, label) in items {
            let _ = writeln!(
                s,
                "<g transform=\"translate({x},52)\">{swatch}<text class=\"small\" x=\"28\" y=\"9\">{label}</text></g>"
            );
            x += 36.0 + 6.2 * label.len() as f64;
        }
        let line = match &self.longest {
            Some(name) => {
                let (c, d) = self.held.get(name).copied().unwrap_or_default();
                format!(
                    "<text x=\"10\" y=\"84\">held the walk longest (consent time + time deferred): \
                     <tspan class=\"longest\" id=\"longest\">{}</tspan> {} (consent {}, deferred {})</text>",
                    esc(name, CLIP_TEXT),
                    ms(c + d),
                    ms(c),
                    ms(d)
                )
            }
            None => "<text x=\"10\" y=\"84\">no notifier held the walk</text>".to_owned(),
        };
        s.push_str(&line);
        s.push('\n');
    }

    /// Grid lines and time labels, every 1, 2 or 5 × 10^k ms.
    fn axis(&self, s: &mut String, top: f64, bottom: f64) {
        let span_ms = self.t_end.saturating_sub(self.t0).max(1000) as f64 / 1000.0;
        let raw = span_ms / 8.0;
        let mag = 10f64.powf(raw.log10().floor());
        let step =
            [1.0, 2.0, 5.0, 10.0].iter().map(|m| m * mag).find(|v| *v >= raw).unwrap_or(mag * 10.0);
        let mut t = 0.0;
        while t <= span_ms + 1e-9 {
            let x = LABEL_W + t / span_ms * TIMELINE_W;
            let _ = writeln!(
                s,
                "<line class=\"grid\" x1=\"{x:.1}\" y1=\"{}\" x2=\"{x:.1}\" y2=\"{bottom}\"/>\
                 <text class=\"axis\" x=\"{x:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>\
                 <text class=\"axis\" x=\"{x:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
                top - 8.0,
                top - 11.0,
                ms((t * 1000.0) as u64),
                bottom + 14.0,
                ms((t * 1000.0) as u64),
            );
            t += step;
        }
    }

    fn group(&self, s: &mut String, g: &Group, y: f64) {
        let when = match (g.status, g.entered) {
            ("start", _) => "start".to_owned(),
            (_, Some(e)) if g.status == "forced" => format!("+{} (forced)", self.ms(e)),
            (_, Some(e)) => format!("+{}", self.ms(e)),
            (st, _) => st.to_owned(),
        };
        let _ = writeln!(
            s,
            "<text class=\"state\" x=\"10\" y=\"{}\">{}</text><text class=\"when\" x=\"{}\" y=\"{}\" \
             text-anchor=\"end\">{}</text>",
            y + 15.0,
            g.target,
            LABEL_W - 8.0,
            y + 15.0,
            esc(&when, CLIP_TEXT)
        );
        if let Some(first) = g.first_at {
            let end = g.entered.or(g.denied_at).unwrap_or(self.t_end);
            let (x1, x2) = (self.x(first), self.x(end));
            let _ = writeln!(
                s,
                "<rect class=\"span\" x=\"{x1:.1}\" y=\"{}\" width=\"{:.1}\" height=\"12\"><title>{} \
                 asked at +{}, {}</title></rect>",
                y + 5.0,
                (x2 - x1).max(1.0),
                g.target,
                self.ms(first),
                esc(&when, CLIP_TEXT)
            );
        }
        if let Some(e) = g.entered.or(g.first_at.is_none().then_some(self.t0)) {
            let _ = writeln!(
                s,
                "<rect class=\"entered\" x=\"{:.1}\" y=\"{}\" width=\"3\" height=\"16\"/>",
                self.x(e) - 1.5,
                y + 3.0
            );
        }
        for (i, lane) in g.lanes.iter().enumerate() {
            self.lane(s, lane, y + STATE_H + NOTIFIER_H * i as f64);
        }
    }

    fn lane(&self, s: &mut String, l: &Lane, y: f64) {
        let longest = self.longest.as_deref() == Some(l.name.as_str());
        let class = if longest { "notifier longest" } else { "notifier" };
        let _ = write!(
            s,
            "<text class=\"{class}\" x=\"26\" y=\"{}\">{}</text>",
            y + 12.0,
            esc(&l.name, CLIP_TEXT)
        );
        if l.inline {
            let _ = write!(
                s,
                "<text class=\"small\" x=\"{}\" y=\"{}\" text-anchor=\"end\">inline</text>",
                LABEL_W - 8.0,
                y + 12.0
            );
        }
        s.push('\n');
        let hold = if longest { " hold" } else { "" };
        let name = clip(&l.name, CLIP_TITLE);
        for m in &l.marks {
            match m {
                Mark::Consent { start, end, verdict } => {
                    let (x1, x2) = (self.x(*start), self.x(*end));
                    let _ = writeln!(
                        s,
                        "<rect class=\"consent{hold}\" x=\"{x1:.1}\" y=\"{}\" width=\"{:.1}\" height=\"10\">\
                         <title>{}: {verdict} after {}</title></rect>",
                        y + 3.0,
                        (x2 - x1).max(2.0),
                        esc(&name, CLIP_TITLE),
                        ms(end - start)
                    );
                }
                Mark::Inline { at } => {
                    let _ = writeln!(
                        s,
                        "<rect class=\"inline\" x=\"{:.1}\" y=\"{}\" width=\"2\" height=\"12\"><title>{} \
                         (inline)</title></rect>",
                        self.x(*at),
                        y + 2.0,
                        esc(&name, CLIP_TITLE)
                    );
                }
                Mark::Deferred { start, end, reason, open } => {
                    let (x1, x2) = (self.x(*start), self.x(*end));
                    let still = if *open { " (still held)" } else { "" };
                    let title = format!(
                        "{name} deferred for {}{still}: {}",
                        ms(end.saturating_sub(*start)),
                        clip(reason, CLIP_TITLE)
                    );
                    let _ = write!(
                        s,
                        "<rect class=\"deferred{hold}\" x=\"{x1:.1}\" y=\"{}\" width=\"{:.1}\" height=\"12\">\
                         <title>{}</title></rect>",
                        y + 2.0,
                        (x2 - x1).max(2.0),
                        esc(&title, CLIP_TITLE * 2)
                    );
                    self.note(
                        s,
                        "defer-text",
                        &format!("deferred: {}", clip(reason, CLIP_TEXT)),
                        x1,
                        x2,
                        y,
                    );
                }
                Mark::Denied { at, reason } => {
                    let x = self.x(*at);
                    let _ = write!(
                        s,
                        "<rect class=\"deny\" x=\"{:.1}\" y=\"{}\" width=\"4\" height=\"14\"><title>{} \
                         denied: {}</title></rect>",
                        x - 2.0,
                        y + 1.0,
                        esc(&name, CLIP_TITLE),
                        esc(reason, CLIP_TITLE)
                    );
                    self.note(
                        s,
                        "deny-text",
                        &format!("denied: {}", clip(reason, CLIP_TEXT)),
                        x,
                        x,
                        y,
                    );
                }
            }
        }
    }

    /// A reason: inside its mark on a light backing when the mark is
    /// wide enough, else after it, else before it.
    fn note(&self, s: &mut String, class: &str, text: &str, x1: f64, x2: f64, y: f64) {
        let text = clip(text, CLIP_TEXT + 12);
        let w = 6.6 * text.chars().count() as f64 + 8.0;
        let x = if x2 - x1 > w + 8.0 {
            let _ = write!(
                s,
                "<rect x=\"{:.1}\" y=\"{}\" width=\"{w:.1}\" height=\"12\" fill=\"#fff\" \
                 fill-opacity=\"0.85\"/>",
                x1 + 4.0,
                y + 2.0
            );
            x1 + 8.0
        } else if LABEL_W + TIMELINE_W + RIGHT_PAD - x2 > w {
            x2 + 5.0
        } else {
            x1 - 5.0 - w
        };
        let _ = writeln!(
            s,
            "<text class=\"{class}\" x=\"{x:.1}\" y=\"{}\">{}</text>",
            y + 12.0,
            esc(&text, CLIP_TEXT + 12)
        );
    }
}
