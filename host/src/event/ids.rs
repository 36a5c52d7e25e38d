//! Ids derived from events: the processing id of a stored event, and the
//! event id of a Kafka message that carries none.

use sha2::Digest;

/// Processing id: a version 8 UUID holding the namespace (60 bits) and the
/// event's sequence number (62 bits), so a lookup needs no extra index.
pub fn processing_id(namespace: u64, seq: u64) -> uuid::Uuid {
    let hi = ((namespace >> 12) << 16) | (0x8 << 12) | (namespace & 0xfff);
    let lo = (0b10u64 << 62) | (seq & ((1 << 62) - 1));
    uuid::Uuid::from_u64_pair(hi, lo)
}

/// The sequence number in a processing id of this namespace.
pub fn seq_of_processing_id(namespace: u64, id: uuid::Uuid) -> Option<u64> {
    let (hi, lo) = id.as_u64_pair();
    (hi == processing_id(namespace, 0).as_u64_pair().0 && lo >> 62 == 0b10)
        .then_some(lo & ((1 << 62) - 1))
}

/// The event id of a message without one: the same for every delivery of
/// the same message.
pub fn derived_id(topic: &str, partition: i32, offset: i64) -> u128 {
    let digest = sha2::Sha256::digest(format!("kafka/{topic}/{partition}/{offset}"));
    let mut b = [0u8; 16];
    b.copy_from_slice(&digest[..16]);
    // A version 8 (custom) UUID.
    b[6] = (b[6] & 0x0f) | 0x80;
    b[8] = (b[8] & 0x3f) | 0x80;
    u128::from_be_bytes(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn processing_ids_round_trip_within_their_namespace() {
        let id = processing_id(0xabc_def0_1234_5678 & ((1 << 60) - 1), 42);
        assert_eq!(id.get_version_num(), 8);
        let ns = 0xabc_def0_1234_5678 & ((1 << 60) - 1);
        assert_eq!(seq_of_processing_id(ns, id), Some(42));
        assert_eq!(seq_of_processing_id(ns ^ 1, id), None);
        assert_eq!(seq_of_processing_id(ns, uuid::Uuid::nil()), None);
    }

    #[test]
    fn derived_ids_are_stable_and_distinct() {
        let a = derived_id("llm-requests", 0, 42);
        assert_eq!(a, derived_id("llm-requests", 0, 42));
        assert_ne!(a, derived_id("llm-requests", 1, 42));
        assert_ne!(a, derived_id("llm-requests", 0, 43));
        assert_ne!(a, derived_id("user-feedback", 0, 42));
        assert_eq!(uuid::Uuid::from_u128(a).get_version_num(), 8);
    }
}
