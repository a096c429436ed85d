#![no_main]
//! Fuzz target: cas_renewd::fuzzing::api_response must never panic.

libfuzzer_sys::fuzz_target!(|data: &[u8]| cas_renewd::fuzzing::api_response(data));
