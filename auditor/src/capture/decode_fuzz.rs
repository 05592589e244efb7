//! The decoder reads what the kernel hands over, and a record's bytes are
//! built from a traced program's arguments: no input may panic it. A
//! bounded proptest pass runs with the unit tests: arbitrary bytes, and
//! records with a believable header (any kind, the exact size of each
//! record type) around arbitrary contents.

use std::mem::size_of;

use auditor_common::{ExitRecord, ForkRecord, Header, PathRecord, SignalRecord, SyscallRecord};
use proptest::prelude::*;

use super::decode::Decoder;
use crate::test_support::fuzz_config;

/// A record of `len` bytes: arbitrary contents under a header that says
/// `kind`, `flags` and the true size, so decoding gets past the checks.
fn record() -> impl Strategy<Value = Vec<u8>> {
    let sizes = prop_oneof![
        Just(size_of::<SyscallRecord>()),
        Just(size_of::<PathRecord>()),
        Just(size_of::<ForkRecord>()),
        Just(size_of::<ExitRecord>()),
        Just(size_of::<SignalRecord>()),
        size_of::<Header>()..4096usize,
    ];
    (sizes, 0u16..16, prop_oneof![Just(0u16), any::<u16>()]).prop_flat_map(|(len, kind, flags)| {
        proptest::collection::vec(any::<u8>(), len).prop_map(move |mut b| {
            b[0..2].copy_from_slice(&kind.to_ne_bytes());
            b[2..4].copy_from_slice(&flags.to_ne_bytes());
            b[4..8].copy_from_slice(&(len as u32).to_ne_bytes());
            b
        })
    })
}

proptest! {
    #![proptest_config(fuzz_config())]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..1024)) {
        let mut out = Vec::new();
        Decoder::default().decode(&bytes, &mut out);
        prop_assert!(out.len() <= 1);
    }

    #[test]
    fn records_with_a_true_header_never_panic(bytes in record()) {
        let mut d = Decoder::default();
        let mut out = Vec::new();
        d.decode(&bytes, &mut out);
        prop_assert!(out.len() <= 1);
        for ev in &out {
            // Whatever came out can be shown and serialized.
            let _ = auditor_analyzer::calls::describe(ev);
            prop_assert!(serde_json::to_string(ev).is_ok());
        }
    }
}
