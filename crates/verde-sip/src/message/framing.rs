//! Cutting SIP messages out of a TCP byte stream (RFC 3261 18.3: Content-Length delimits the
//! body on stream transports).

use super::headers::canonical;

/// What the first bytes of a stream buffer hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame {
    /// A complete message occupies `buf[..len]`.
    Message { len: usize },
    /// `len` bytes of CRLF keep-alive (RFC 5626 4.4.1) to discard before the next message;
    /// a double CRLF ping deserves a single CRLF pong.
    KeepAlive { len: usize },
    /// More bytes are needed.
    NeedMore,
}

/// Why a stream can no longer be framed; the binary should close the connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("SIP message larger than {max} bytes")]
    TooLarge { max: usize },
    #[error("invalid Content-Length on a stream transport")]
    BadContentLength,
}

/// Finds the first message in `buf`. A missing Content-Length counts as 0 (lenient towards
/// bodiless messages from sloppy peers; RFC 3261 requires it on TCP).
pub fn frame(buf: &[u8], max_size: usize) -> Result<Frame, FrameError> {
    let crlf = buf
        .iter()
        .take_while(|&&b| b == b'\r' || b == b'\n')
        .count();
    if crlf > 0 {
        return Ok(Frame::KeepAlive { len: crlf });
    }
    let Some(head_len) = find(buf, b"\r\n\r\n").map(|i| i + 4) else {
        return if buf.len() >= max_size {
            Err(FrameError::TooLarge { max: max_size })
        } else {
            Ok(Frame::NeedMore)
        };
    };
    if head_len > max_size {
        return Err(FrameError::TooLarge { max: max_size });
    }
    // Every Content-Length line is read: two that disagree (RFC 4475 3.3.9) leave the stream
    // unframeable, exactly like a value that is not a number.
    let mut declared: Option<usize> = None;
    for line in buf[..head_len].split(|&b| b == b'\n').skip(1) {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let name = std::str::from_utf8(&line[..colon]).unwrap_or("");
        if canonical(name.trim()) == Some("Content-Length") {
            let n = std::str::from_utf8(&line[colon + 1..])
                .ok()
                .and_then(|v| v.trim().parse::<usize>().ok())
                .ok_or(FrameError::BadContentLength)?;
            if declared.is_some_and(|d| d != n) {
                return Err(FrameError::BadContentLength);
            }
            declared = Some(n);
        }
    }
    let body_len = declared.unwrap_or(0);
    let total = head_len
        .checked_add(body_len)
        .ok_or(FrameError::TooLarge { max: max_size })?;
    if total > max_size {
        return Err(FrameError::TooLarge { max: max_size });
    }
    if buf.len() < total {
        Ok(Frame::NeedMore)
    } else {
        Ok(Frame::Message { len: total })
    }
}

pub(crate) fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    let (&first, rest) = needle.split_first()?;
    (0..hay.len().saturating_sub(rest.len()))
        .find(|&i| hay[i] == first && hay[i + 1..].starts_with(rest))
}
