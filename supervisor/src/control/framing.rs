//! Line framing of the control protocol: one JSON object per line, at most
//! [`MAX_LINE`] bytes. An over-long line is reported once and the rest of
//! it discarded without being buffered, so memory stays bounded whatever a
//! client sends.

use lwsys_messages::protocol::MAX_LINE;
use tokio::io::{AsyncBufRead, AsyncBufReadExt};

/// What the reader produced.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    /// A complete line, without its newline (or a final unterminated line).
    Line(Vec<u8>),
    /// A line went past the limit; its rest is being discarded.
    TooLarge,
    /// The peer closed its side.
    Eof,
}

/// Reads frames from a buffered byte stream.
pub struct LineReader<R> {
    inner: R,
    buf: Vec<u8>,
    discarding: bool,
    max: usize,
}

impl<R: AsyncBufRead + Unpin> LineReader<R> {
    /// A reader with the protocol's 1 MiB limit.
    pub fn new(inner: R) -> Self {
        Self::with_limit(inner, MAX_LINE)
    }

    /// A reader with another limit (for tests).
    pub fn with_limit(inner: R, max: usize) -> Self {
        Self { inner, buf: Vec::new(), discarding: false, max }
    }

    /// The next frame. Empty lines are skipped.
    pub async fn next_frame(&mut self) -> std::io::Result<Frame> {
        loop {
            let avail = self.inner.fill_buf().await?;
            if avail.is_empty() {
                // A last line without its newline is framed like any other:
                // a blank one is skipped here too, not answered.
                let last = finish(std::mem::take(&mut self.buf));
                return Ok(match last {
                    Some(line) if !self.discarding => Frame::Line(line),
                    _ => {
                        self.discarding = false;
                        Frame::Eof
                    }
                });
            }
            let (chunk, consumed, ended) = match avail.iter().position(|b| *b == b'\n') {
                Some(i) => (&avail[..i], i + 1, true),
                None => (avail, avail.len(), false),
            };
            if self.discarding {
                self.inner.consume(consumed);
                self.discarding = !ended;
                continue;
            }
            if self.buf.len() + chunk.len() > self.max {
                self.buf = Vec::new();
                self.discarding = !ended;
                self.inner.consume(consumed);
                return Ok(Frame::TooLarge);
            }
            self.buf.extend_from_slice(chunk);
            self.inner.consume(consumed);
            if ended {
                match finish(std::mem::take(&mut self.buf)) {
                    Some(line) => return Ok(Frame::Line(line)),
                    None => continue,
                }
            }
        }
    }
}

/// A line as delivered: without a trailing `\r`; `None` when blank.
fn finish(mut line: Vec<u8>) -> Option<Vec<u8>> {
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    (!line.iter().all(u8::is_ascii_whitespace)).then_some(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn frames(input: &[u8], max: usize) -> Vec<Frame> {
        let mut r = LineReader::with_limit(tokio::io::BufReader::with_capacity(4, input), max);
        let mut out = Vec::new();
        loop {
            let f = r.next_frame().await.unwrap();
            let eof = f == Frame::Eof;
            out.push(f);
            if eof {
                return out;
            }
        }
    }

    #[tokio::test]
    async fn splits_lines_and_skips_blank_ones() {
        let got = frames(b"{\"a\":1}\r\n\n  \n{}\nlast", 100).await;
        assert_eq!(
            got,
            [
                Frame::Line(b"{\"a\":1}".to_vec()),
                Frame::Line(b"{}".to_vec()),
                Frame::Line(b"last".to_vec()),
                Frame::Eof
            ]
        );
    }

    #[tokio::test]
    async fn a_blank_last_line_without_newline_is_skipped_too() {
        // Found by the fuzz target: "\x0c\x0c" at EOF was delivered and so
        // answered, unlike the same line with its newline.
        assert_eq!(frames(b"{}\n\x0c\x0c", 100).await, [Frame::Line(b"{}".to_vec()), Frame::Eof]);
        assert_eq!(frames(b" \r", 100).await, [Frame::Eof]);
        assert_eq!(frames(b"{}\r", 100).await, [Frame::Line(b"{}".to_vec()), Frame::Eof]);
    }

    #[tokio::test]
    async fn an_over_long_line_is_reported_once_and_the_next_line_still_read() {
        let mut input = vec![b'x'; 50];
        input.extend_from_slice(b"\n{}\n");
        let got = frames(&input, 10).await;
        assert_eq!(got, [Frame::TooLarge, Frame::Line(b"{}".to_vec()), Frame::Eof]);
    }

    #[tokio::test]
    async fn a_line_of_exactly_the_limit_is_accepted() {
        let mut input = vec![b'y'; 10];
        input.push(b'\n');
        assert_eq!(frames(&input, 10).await, [Frame::Line(vec![b'y'; 10]), Frame::Eof]);
        let mut input = vec![b'y'; 11];
        input.push(b'\n');
        assert_eq!(frames(&input, 10).await, [Frame::TooLarge, Frame::Eof]);
    }
}
