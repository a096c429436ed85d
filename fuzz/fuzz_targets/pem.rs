#![no_main]
//! Fuzz target: cas_renewd_fuzz::pem must never panic.

libfuzzer_sys::fuzz_target!(|data: &[u8]| cas_renewd_fuzz::pem(data));
