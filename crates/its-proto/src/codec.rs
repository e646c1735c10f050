//! MessagePack encoding: structs as maps with named fields, so readers in any language see
//! field names and can ignore fields they do not know.

use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::{DropReason, FrameMsg, SCHEMA_VERSION, limits, subjects};

/// Encoding and validation errors of wire messages.
#[derive(Debug, thiserror::Error)]
pub enum ProtoError {
    /// The value could not be encoded.
    #[error("cannot encode message: {0}")]
    Encode(#[from] rmp_serde::encode::Error),
    /// The bytes are not the expected MessagePack map.
    #[error("cannot decode message: {0}")]
    Decode(#[from] rmp_serde::decode::Error),
    /// A frame was refused; `reason` is the counted drop reason.
    #[error("frame rejected ({}): {message}", reason.as_str())]
    Rejected {
        /// Drop reason to count.
        reason: DropReason,
        /// What exactly was wrong.
        message: String,
    },
}

impl ProtoError {
    fn rejected(reason: DropReason, message: impl Into<String>) -> Self {
        ProtoError::Rejected {
            reason,
            message: message.into(),
        }
    }

    /// The drop reason a frame receiver counts for this error.
    pub fn drop_reason(&self) -> DropReason {
        match self {
            ProtoError::Rejected { reason, .. } => *reason,
            _ => DropReason::MalformedEnvelope,
        }
    }
}

/// Encodes a message as a MessagePack map with named fields.
pub fn encode<T: Serialize>(msg: &T) -> Result<Vec<u8>, ProtoError> {
    Ok(rmp_serde::to_vec_named(msg)?)
}

/// Decodes a MessagePack message. Unknown fields are ignored.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ProtoError> {
    Ok(rmp_serde::from_slice(bytes)?)
}

#[derive(Deserialize)]
struct VersionProbe {
    v: u16,
}

/// Decodes and checks a FrameMsg received on `subject`, in the order a receiver must:
/// size limit, schema version, envelope, camera id, dimensions. Every failure carries the
/// drop reason to count. The JPEG payload itself is checked later, by the decoder.
pub fn decode_frame(bytes: &[u8], subject: &str, max_bytes: usize) -> Result<FrameMsg, ProtoError> {
    if bytes.len() > max_bytes {
        return Err(ProtoError::rejected(
            DropReason::PayloadTooLarge,
            format!("message is {} bytes, limit is {max_bytes}", bytes.len()),
        ));
    }
    // The happy path parses once; only a message that fails to parse is probed for its
    // version, so that a newer schema is reported as such rather than as garbage.
    let unsupported = |v: u16| {
        ProtoError::rejected(
            DropReason::UnsupportedVersion,
            format!("schema version {v} is not supported (this node reads {SCHEMA_VERSION})"),
        )
    };
    let frame: FrameMsg = match rmp_serde::from_slice(bytes) {
        Ok(frame) => frame,
        Err(e) => {
            return Err(match rmp_serde::from_slice::<VersionProbe>(bytes) {
                Ok(probe) if probe.v != SCHEMA_VERSION => unsupported(probe.v),
                Ok(_) => ProtoError::rejected(
                    DropReason::MalformedEnvelope,
                    format!("bad FrameMsg: {e}"),
                ),
                Err(_) => ProtoError::rejected(
                    DropReason::MalformedEnvelope,
                    format!("not a FrameMsg map with a `v` field: {e}"),
                ),
            });
        }
    };
    if frame.v != SCHEMA_VERSION {
        return Err(unsupported(frame.v));
    }
    let from_subject = subjects::last_token(subject);
    if !subjects::is_valid_id(&frame.camera_id) || frame.camera_id != from_subject {
        return Err(ProtoError::rejected(
            DropReason::BadCameraId,
            format!(
                "camera id {:?} is invalid or differs from the subject's {from_subject:?}",
                frame.camera_id
            ),
        ));
    }
    if frame.width == 0
        || frame.height == 0
        || frame.width > limits::MAX_FRAME_DIM
        || frame.height > limits::MAX_FRAME_DIM
    {
        return Err(ProtoError::rejected(
            DropReason::BadDimensions,
            format!(
                "frame is {}x{}, allowed 1..={} per side",
                frame.width,
                frame.height,
                limits::MAX_FRAME_DIM
            ),
        ));
    }
    if frame.data.is_empty() {
        return Err(ProtoError::rejected(
            DropReason::Undecodable,
            "frame payload is empty",
        ));
    }
    Ok(frame)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Encoding, Priority};

    fn frame() -> FrameMsg {
        FrameMsg {
            v: SCHEMA_VERSION,
            camera_id: "cam-1".into(),
            seq: 7,
            captured_at_ns: 1_700_000_000_000_000_000,
            priority: Priority::Urgent,
            deadline_ns: None,
            width: 640,
            height: 480,
            encoding: Encoding::Jpeg,
            data: vec![0xff, 0xd8, 0xff, 0xd9],
        }
    }

    #[test]
    fn frames_round_trip_as_named_maps() {
        let bytes = encode(&frame()).unwrap();
        // A map, and the field names are on the wire.
        assert_eq!(bytes[0] & 0xf0, 0x80, "fixmap expected");
        let text = String::from_utf8_lossy(&bytes);
        for name in ["camera_id", "captured_at_ns", "priority", "urgent", "data"] {
            assert!(text.contains(name), "{name} missing on the wire");
        }
        assert!(
            !text.contains("deadline_ns"),
            "absent option must be omitted"
        );
        let back = decode_frame(&bytes, "its.frames.cam-1", 1 << 20).unwrap();
        assert_eq!(back, frame());
    }

    #[test]
    fn each_bad_frame_gets_its_reason() {
        let ok = encode(&frame()).unwrap();
        let reason = |bytes: &[u8], subject: &str, max: usize| {
            decode_frame(bytes, subject, max).unwrap_err().drop_reason()
        };
        assert_eq!(
            reason(b"garbage", "its.frames.cam-1", 1 << 20),
            DropReason::MalformedEnvelope
        );
        assert_eq!(
            reason(&ok, "its.frames.cam-1", ok.len() - 1),
            DropReason::PayloadTooLarge
        );
        assert_eq!(
            reason(&ok, "its.frames.cam-2", 1 << 20),
            DropReason::BadCameraId
        );
        let mut f = frame();
        f.v = 99;
        assert_eq!(
            reason(&encode(&f).unwrap(), "its.frames.cam-1", 1 << 20),
            DropReason::UnsupportedVersion
        );
        let mut f = frame();
        f.width = 0;
        assert_eq!(
            reason(&encode(&f).unwrap(), "its.frames.cam-1", 1 << 20),
            DropReason::BadDimensions
        );
        let mut f = frame();
        f.data.clear();
        assert_eq!(
            reason(&encode(&f).unwrap(), "its.frames.cam-1", 1 << 20),
            DropReason::Undecodable
        );
    }

    #[test]
    fn a_newer_version_with_another_shape_is_unsupported_not_malformed() {
        #[derive(Serialize)]
        struct V2 {
            v: u16,
            camera: String,
        }
        let bytes = encode(&V2 {
            v: 2,
            camera: "cam-1".into(),
        })
        .unwrap();
        let err = decode_frame(&bytes, "its.frames.cam-1", 1 << 20).unwrap_err();
        assert_eq!(err.drop_reason(), DropReason::UnsupportedVersion);
        let v1_missing_fields = V2 {
            v: SCHEMA_VERSION,
            camera: "cam-1".into(),
        };
        let bytes = encode(&v1_missing_fields).unwrap();
        let err = decode_frame(&bytes, "its.frames.cam-1", 1 << 20).unwrap_err();
        assert_eq!(err.drop_reason(), DropReason::MalformedEnvelope);
    }

    #[test]
    fn readers_ignore_unknown_fields() {
        #[derive(Serialize)]
        struct Newer {
            #[serde(flatten)]
            f: FrameMsg,
            added_later: u32,
        }
        let bytes = encode(&Newer {
            f: frame(),
            added_later: 3,
        })
        .unwrap();
        assert_eq!(
            decode_frame(&bytes, "its.frames.cam-1", 1 << 20).unwrap(),
            frame()
        );
    }
}
