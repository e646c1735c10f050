//! The configuration file: any text gives validated settings or an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(settings) = its_config::from_toml_str(text)
    {
        // What loads must also pass validation when checked again.
        settings.validate().expect("loaded settings are valid");
    }
});
