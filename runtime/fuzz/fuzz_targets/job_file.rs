//! Job files, as TOML and as JSON: parsing and validation must answer Ok or a clear error,
//! never panic, whatever the bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use troupe_runtime::job::validate::validate;
use troupe_runtime::JobSpec;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    for name in ["fuzz.toml", "fuzz.json"] {
        if let Ok(spec) = JobSpec::parse(&text, name) {
            let _ = validate(&spec);
        }
    }
});
