//! HTTP dates (RFC 9110 §5.6.7): parsing all three forms for
//! `If-Modified-Since` and `Last-Modified`, and formatting IMF-fixdates.
//! [`http_date`] is public as `http::conditional::http_date`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// Parses an HTTP-date in any of its three forms into seconds since the epoch.
pub(crate) fn parse_http_date(s: &str) -> Option<u64> {
    let s = s.trim();
    let (_, rest) = s.split_once(' ')?;
    let fields: Vec<&str> = rest.split_ascii_whitespace().collect();
    let (day, month, year, time) = if let [date, time, "GMT"] = fields[..] {
        // RFC 850: `Sunday, 06-Nov-94 08:49:37 GMT`
        let mut p = date.split('-');
        let (d, m, y) = (p.next()?, p.next()?, p.next()?);
        let y: u64 = parse_digits(y, 2)?;
        // Two-digit years: RFC 9110 §5.6.7 (more than 50 years ahead is the past).
        (d, m, if y < 70 { 2000 + y } else { 1900 + y }, time)
    } else if let [d, m, y, time, "GMT"] = fields[..] {
        // IMF-fixdate: `Sun, 06 Nov 1994 08:49:37 GMT`
        (d, m, parse_digits(y, 4)?, time)
    } else if let [m, d, time, y] = fields[..] {
        // asctime: `Sun Nov  6 08:49:37 1994`
        (d, m, parse_digits(y, 4)?, time)
    } else {
        return None;
    };
    let day: u64 = day.parse().ok().filter(|d| (1..=31).contains(d))?;
    let month = 1 + MONTHS.iter().position(|m| *m == month)? as u64;
    let mut t = time.split(':');
    let h: u64 = parse_digits(t.next()?, 2).filter(|h| *h < 24)?;
    let min: u64 = parse_digits(t.next()?, 2).filter(|m| *m < 60)?;
    let sec: u64 = parse_digits(t.next()?, 2).filter(|s| *s <= 60)?;
    if t.next().is_some() || year < 1970 {
        return None;
    }
    let days = days_from_civil(year, month, day);
    Some(days * 86_400 + h * 3_600 + min * 60 + sec)
}

fn parse_digits(s: &str, len: usize) -> Option<u64> {
    (s.len() == len && s.bytes().all(|b| b.is_ascii_digit()))
        .then(|| s.parse().ok())
        .flatten()
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: u64, m: u64, d: u64) -> u64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Formats `time` as an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`), for
/// `Last-Modified` headers.
pub fn http_date(time: SystemTime) -> String {
    let secs = time
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs();
    let days = secs / 86_400;
    let rem = secs % 86_400;
    // civil_from_days (H. Hinnant).
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    let weekday = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"][(days % 7) as usize];
    format!(
        "{weekday}, {d:02} {} {y:04} {:02}:{:02}:{:02} GMT",
        MONTHS[(m - 1) as usize],
        rem / 3_600,
        rem % 3_600 / 60,
        rem % 60
    )
}
