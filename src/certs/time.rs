//! Unix seconds for certificate dates: the library never reads the clock itself (callers pass `now`), except
//! through [`unix_now`], which `main`-level code and the self-signed generator use.

use std::time::{SystemTime, UNIX_EPOCH};

use x509_parser::time::ASN1Time;

/// The current time in unix seconds (0 if the clock is before 1970).
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// `2025-01-31T12:00:00Z`, or `@<secs>` for a value outside the calendar's range.
pub fn format_unix(secs: i64) -> String {
    match ASN1Time::from_timestamp(secs) {
        Ok(t) => {
            let dt = t.to_datetime();
            format!(
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
                dt.year(),
                u8::from(dt.month()),
                dt.day(),
                dt.hour(),
                dt.minute(),
                dt.second()
            )
        }
        Err(_) => format!("@{secs}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_rfc3339_utc() {
        assert_eq!(format_unix(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_unix(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(format_unix(951_782_400), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn out_of_range_is_still_printable() {
        assert_eq!(format_unix(i64::MAX), format!("@{}", i64::MAX));
    }
}
