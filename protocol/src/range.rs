//! HTTP `Range` requests on artifacts (RFC 9110 §14).
//!
//! Clients resume a download from the verified offset with `bytes=N-` (DESIGN §7), so this is
//! on the boot path. Supported: one range of the forms `bytes=A-B`, `bytes=A-` and `bytes=-N`.
//! A request with several ranges gets `200` and the whole body (RFC 9110 §14.2 lets a server
//! ignore `Range`); a header that does not parse is ignored the same way. A range that cannot be
//! satisfied gets `416` with `Content-Range: bytes */<size>`.

/// The outcome of looking at a `Range` header for a representation of `size` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeDecision {
    /// Serve the whole body with 200 (no header, a multi-range or an unparsable one).
    Full,
    /// Serve bytes `start..=end` with 206.
    Partial {
        /// First byte offset.
        start: u64,
        /// Last byte offset, inclusive.
        end: u64,
    },
    /// Answer 416: no byte of the range exists.
    Unsatisfiable,
}

/// Decides how to answer `header` (the `Range` value, if any) for a body of `size` bytes.
pub fn decide(header: Option<&str>, size: u64) -> RangeDecision {
    let Some(header) = header else {
        return RangeDecision::Full;
    };
    let Some(spec) = header.trim().strip_prefix("bytes=") else {
        return RangeDecision::Full;
    };
    if spec.contains(',') {
        return RangeDecision::Full;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return RangeDecision::Full;
    };
    let (first, last) = (first.trim(), last.trim());
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    match (first.is_empty(), last.is_empty()) {
        // bytes=-N: the last N bytes.
        // An empty file has no last byte, however long the suffix (one over u64::MAX
        // included: it answered 206 `bytes 0-0/0`, found by the `http_range` fuzz target).
        (true, false) if digits(last) => match last.parse::<u64>() {
            Ok(0) => RangeDecision::Unsatisfiable,
            _ if size == 0 => RangeDecision::Unsatisfiable,
            Ok(n) => RangeDecision::Partial {
                start: size.saturating_sub(n),
                end: size - 1,
            },
            Err(_) => RangeDecision::Partial {
                start: 0,
                end: size - 1,
            },
        },
        // bytes=A-: from A to the end.
        (false, true) if digits(first) => match first.parse::<u64>() {
            Ok(a) if a < size => RangeDecision::Partial {
                start: a,
                end: size - 1,
            },
            _ => RangeDecision::Unsatisfiable,
        },
        // bytes=A-B.
        (false, false) if digits(first) && digits(last) => {
            let (Ok(a), b) = (
                first.parse::<u64>(),
                last.parse::<u64>().unwrap_or(u64::MAX),
            ) else {
                return RangeDecision::Unsatisfiable;
            };
            if a > b {
                // An invalid range-spec: RFC 9110 §14.1.1 makes the whole header invalid, ignored.
                return RangeDecision::Full;
            }
            if a >= size {
                return RangeDecision::Unsatisfiable;
            }
            RangeDecision::Partial {
                start: a,
                end: b.min(size - 1),
            }
        }
        _ => RangeDecision::Full,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use RangeDecision::*;

    #[test]
    fn range_table_follows_rfc_9110() {
        let size = 100;
        let table: &[(Option<&str>, RangeDecision)] = &[
            (None, Full),
            (Some("bytes=0-0"), Partial { start: 0, end: 0 }),
            (Some("bytes=-1"), Partial { start: 99, end: 99 }),
            (Some("bytes=-500"), Partial { start: 0, end: 99 }),
            (Some("bytes=10-"), Partial { start: 10, end: 99 }),
            (Some("bytes=99-"), Partial { start: 99, end: 99 }),
            (Some("bytes=100-"), Unsatisfiable),
            (Some("bytes=1000-"), Unsatisfiable),
            (Some("bytes=10-1000"), Partial { start: 10, end: 99 }),
            (Some("bytes=100-200"), Unsatisfiable),
            (Some("bytes=5-2"), Full),
            (Some("bytes=-0"), Unsatisfiable),
            (Some("bytes=0-1,5-6"), Full),
            (Some("garbage"), Full),
            (Some("bytes=a-b"), Full),
            (Some("items=0-1"), Full),
            (Some("bytes=-"), Full),
            (Some("bytes=99999999999999999999999-"), Unsatisfiable),
        ];
        for (header, want) in table {
            assert_eq!(decide(*header, size), *want, "{header:?}");
        }
    }

    #[test]
    fn empty_file_satisfies_no_range() {
        assert_eq!(decide(Some("bytes=0-0"), 0), Unsatisfiable);
        assert_eq!(decide(Some("bytes=-1"), 0), Unsatisfiable);
        assert_eq!(decide(Some("bytes=0-"), 0), Unsatisfiable);
    }

    /// Fuzz target `http_range` (fuzz/seeds/http_range/crash-suffix-over-u64-on-empty-file):
    /// a suffix too long for a u64 fell through to "the whole file" = bytes 0-0 of 0 bytes.
    #[test]
    fn suffix_over_u64_max_on_empty_file_is_unsatisfiable_not_one_byte() {
        assert_eq!(
            decide(Some("bytes=-18546744073591032210"), 0),
            Unsatisfiable
        );
        assert_eq!(
            decide(Some("bytes=-18546744073591032210"), 5),
            Partial { start: 0, end: 4 }
        );
    }
}
