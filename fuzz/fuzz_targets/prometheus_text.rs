//! The Prometheus text parser on arbitrary bytes, fed whole and in two chunks cut at a byte the
//! input chooses: never a panic, and the chunked answer equals the whole body's.
#![no_main]

use libfuzzer_sys::fuzz_target;
use milvus_signals::exposition::{Exposition, Limits, ParseError, StreamParser};

fn run(chunks: &[&[u8]]) -> Result<Exposition, ParseError> {
    let mut parser = StreamParser::new(Limits::default(), |_: &str| true);
    for chunk in chunks {
        parser.feed(chunk)?;
    }
    parser.finish()
}

fn fingerprint(r: &Result<Exposition, ParseError>) -> String {
    match r {
        Ok(e) => {
            let samples: Vec<String> = e
                .samples
                .iter()
                .map(|s| format!("{}{:?}{}", s.name, s.labels, s.value.to_bits()))
                .collect();
            format!("ok {:?} {samples:?}", e.families)
        }
        Err(e) => format!("err {e}"),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&cut, body)) = data.split_first() else {
        return;
    };
    let at = usize::from(cut) * body.len() / 255;
    let whole = run(&[body]);
    let chunked = run(&[&body[..at], &body[at..]]);
    assert_eq!(fingerprint(&whole), fingerprint(&chunked), "cut at {at}");
});
