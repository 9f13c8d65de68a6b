//! Dead letters: a record that cannot be used goes to a dead-letter topic with its key, its
//! payload (cut to a bound) and headers saying why and where it came from. The event
//! processor and the lifecycle write them the same way.

use rdkafka::message::{Header, OwnedHeaders};

/// Dead-letter headers: why the record was rejected and where it came from.
pub const HEADER_ERROR: &str = "dissuade.error";
pub const HEADER_ERROR_KIND: &str = "dissuade.error.kind";
pub const HEADER_ERROR_FIELD: &str = "dissuade.error.field";
pub const HEADER_SOURCE_TOPIC: &str = "dissuade.source.topic";
pub const HEADER_SOURCE_PARTITION: &str = "dissuade.source.partition";
pub const HEADER_SOURCE_OFFSET: &str = "dissuade.source.offset";
/// Size of the payload before it was cut to fit, in bytes.
pub const HEADER_ORIGINAL_SIZE: &str = "dissuade.original.size";
/// `true` when the dead letter carries only the first `input.max_record_bytes` of the payload.
pub const HEADER_TRUNCATED: &str = "dissuade.truncated";
/// For a refused output: the topic that refused it.
pub const HEADER_OUTPUT_TOPIC: &str = "dissuade.output.topic";

/// Dead-letter kind of an output the broker refused as a record.
pub const OUTPUT_REJECTED: &str = "output_rejected";

/// Why a dead letter was written. `message` must hold no phone number.
pub struct DeadLetter<'a> {
    pub kind: &'a str,
    pub field: Option<&'a str>,
    pub message: &'a str,
    /// For a refused output: the topic that refused it.
    pub output_topic: Option<&'a str>,
    pub original_size: usize,
}

impl DeadLetter<'_> {
    /// The headers of the dead letter of the record at `partition`/`offset` of
    /// `source_topic`, whose payload is sent cut to `sent_len` bytes.
    pub fn headers(
        &self,
        source_topic: &str,
        partition: i32,
        offset: i64,
        sent_len: usize,
    ) -> OwnedHeaders {
        let partition = partition.to_string();
        let offset = offset.to_string();
        let size = self.original_size.to_string();
        let mut headers = OwnedHeaders::new_with_capacity(9);
        for (k, v) in [
            (HEADER_ERROR, self.message),
            (HEADER_ERROR_KIND, self.kind),
            (HEADER_SOURCE_TOPIC, source_topic),
            (HEADER_SOURCE_PARTITION, partition.as_str()),
            (HEADER_SOURCE_OFFSET, offset.as_str()),
            (HEADER_ORIGINAL_SIZE, size.as_str()),
        ] {
            headers = headers.insert(Header {
                key: k,
                value: Some(v),
            });
        }
        let optional = [
            (HEADER_ERROR_FIELD, self.field),
            (HEADER_OUTPUT_TOPIC, self.output_topic),
            (
                HEADER_TRUNCATED,
                (sent_len < self.original_size).then_some("true"),
            ),
        ];
        for (k, v) in optional {
            if let Some(v) = v {
                headers = headers.insert(Header {
                    key: k,
                    value: Some(v),
                });
            }
        }
        headers
    }
}
