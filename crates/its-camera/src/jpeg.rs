//! JPEG structure checks without decoding: frame boundaries in a byte stream, the size from
//! the SOF header, and a sanity check that a buffer is one whole JPEG.

/// Why a buffer is not a usable JPEG.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JpegError {
    /// No SOI marker at the start.
    #[error("no JPEG start-of-image marker")]
    NoStart,
    /// No EOI marker at the end.
    #[error("JPEG is truncated (no end-of-image marker)")]
    Truncated,
    /// No frame header, or a frame header with a zero side.
    #[error("JPEG has no usable frame header")]
    NoFrameHeader,
    /// A marker segment runs past the end of the buffer or is malformed.
    #[error("JPEG marker segment is malformed at byte {0}")]
    BadSegment(usize),
}

/// Width and height of a JPEG, read from its SOFn header; also checks that the buffer starts
/// with SOI and ends with EOI. The entropy-coded data is not decoded.
pub fn inspect(buf: &[u8]) -> Result<(u32, u32), JpegError> {
    if buf.len() < 4 || buf[0] != 0xFF || buf[1] != 0xD8 {
        return Err(JpegError::NoStart);
    }
    let end = buf.len();
    // Trailing padding after EOI is tolerated (some cameras add a CR LF).
    let trimmed = buf
        .iter()
        .rposition(|&b| b != b'\r' && b != b'\n' && b != 0)
        .map(|p| p + 1)
        .unwrap_or(0);
    if trimmed < 2 || buf[trimmed - 2] != 0xFF || buf[trimmed - 1] != 0xD9 {
        return Err(JpegError::Truncated);
    }
    let mut i = 2;
    while i + 4 <= end {
        if buf[i] != 0xFF {
            return Err(JpegError::BadSegment(i));
        }
        let marker = buf[i + 1];
        if marker == 0xFF {
            // fill byte
            i += 1;
            continue;
        }
        if marker == 0xD8 || (0xD0..=0xD7).contains(&marker) || marker == 0x01 {
            i += 2;
            continue;
        }
        if marker == 0xD9 || marker == 0xDA {
            // End of image or start of scan before any frame header.
            return Err(JpegError::NoFrameHeader);
        }
        let len = u16::from_be_bytes([buf[i + 2], buf[i + 3]]) as usize;
        if len < 2 || i + 2 + len > end {
            return Err(JpegError::BadSegment(i));
        }
        let is_sof = matches!(marker, 0xC0..=0xCF) && !matches!(marker, 0xC4 | 0xC8 | 0xCC);
        if is_sof {
            if len < 7 {
                return Err(JpegError::BadSegment(i));
            }
            let h = u16::from_be_bytes([buf[i + 5], buf[i + 6]]) as u32;
            let w = u16::from_be_bytes([buf[i + 7], buf[i + 8]]) as u32;
            if w == 0 || h == 0 {
                return Err(JpegError::NoFrameHeader);
            }
            return Ok((w, h));
        }
        i += 2 + len;
    }
    Err(JpegError::NoFrameHeader)
}

/// Splits concatenated JPEGs (as `ffmpeg -f image2pipe` writes them) out of a growing buffer.
///
/// Returns the length of the first complete JPEG at the start of `buf`, if there is one. The
/// scan walks marker segments up to the start of scan, then looks for EOI in the entropy-coded
/// data (where 0xFF is always followed by 0x00 or a restart marker).
pub fn next_frame_len(buf: &[u8]) -> Option<usize> {
    if buf.len() < 4 {
        return None;
    }
    let mut i = 2;
    // Header segments.
    loop {
        if i + 4 > buf.len() {
            return None;
        }
        if buf[i] != 0xFF {
            // Not a marker where one must be: let the caller resynchronise on the next SOI.
            return Some(i);
        }
        let marker = buf[i + 1];
        if marker == 0xFF {
            i += 1;
            continue;
        }
        let len = u16::from_be_bytes([buf[i + 2], buf[i + 3]]) as usize;
        i += 2 + len;
        if marker == 0xDA {
            break;
        }
    }
    // Entropy-coded data (possibly several scans) up to EOI.
    while i + 1 < buf.len() {
        if buf[i] == 0xFF {
            match buf[i + 1] {
                0xD9 => return Some(i + 2),
                0x00 | 0xFF | 0xD0..=0xD7 => i += 1,
                _ => {
                    // Another marker segment between scans (DHT, SOS of a progressive JPEG).
                    if i + 4 > buf.len() {
                        return None;
                    }
                    let len = u16::from_be_bytes([buf[i + 2], buf[i + 3]]) as usize;
                    i += 2 + len;
                    continue;
                }
            }
        }
        i += 1;
    }
    None
}

/// Position of the next SOI marker (`FF D8 FF`) at or after `from`.
pub fn find_start(buf: &[u8], from: usize) -> Option<usize> {
    buf.get(from..)?
        .windows(3)
        .position(|w| w == [0xFF, 0xD8, 0xFF])
        .map(|p| p + from)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jpeg(w: u16, h: u16) -> Vec<u8> {
        let img = vec![128u8; w as usize * h as usize * 3];
        let mut out = Vec::new();
        jpeg_encoder::Encoder::new(&mut out, 80)
            .encode(&img, w, h, jpeg_encoder::ColorType::Rgb)
            .unwrap();
        out
    }

    #[test]
    fn reads_the_size_and_rejects_damage() {
        let j = jpeg(40, 24);
        assert_eq!(inspect(&j), Ok((40, 24)));
        assert_eq!(inspect(&j[..j.len() - 10]), Err(JpegError::Truncated));
        assert_eq!(inspect(b"not a jpeg at all"), Err(JpegError::NoStart));
        let mut padded = j.clone();
        padded.extend_from_slice(b"\r\n");
        assert_eq!(inspect(&padded), Ok((40, 24)));
    }

    #[test]
    fn splits_a_stream_of_frames() {
        let a = jpeg(32, 16);
        let b = jpeg(64, 48);
        let mut stream = a.clone();
        stream.extend_from_slice(&b);
        let n = next_frame_len(&stream).unwrap();
        assert_eq!(n, a.len());
        assert_eq!(next_frame_len(&stream[n..]), Some(b.len()));
        assert_eq!(next_frame_len(&b[..b.len() - 1]), None);
        assert_eq!(find_start(&stream, 1), Some(a.len()));
    }
}
