//! The scripts' replies, decoded into a [`Verdict`]: GCRA's one signed
//! integer (see `scripts::GCRA`) and the windows' four-integer arrays. A
//! reply that no script of this version can give (a wrong length, a value
//! out of its range) is a [`CacheError::Store`], never a panic and never a
//! made-up verdict.

use super::Verdict;
use super::local::Policy;
use crate::error::CacheError;

/// The constants of a GCRA decision, all in microseconds: the emission
/// interval, the burst (`points × period`) and the increment
/// (`cost × period`). The script gets `burst` and `inc`; the client keeps
/// `period` to count the points left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Gcra {
    pub period: u64,
    pub burst: u64,
    pub inc: u64,
}

impl Gcra {
    pub(super) fn of(p: &Policy) -> Self {
        let period = p.period_us();
        Self {
            period,
            burst: period.saturating_mul(u64::from(p.points)),
            inc: period.saturating_mul(u64::from(p.cost)),
        }
    }

    /// The script's arguments: burst and increment.
    pub(super) fn args(self) -> [i64; 2] {
        let i = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        [i(self.burst), i(self.inc)]
    }

    /// The verdict of the script's reply `r`: `new_tat - now` when admitted
    /// (in `inc..=burst`), `-1 - (tat - now)` when denied (with
    /// `tat - now > burst - inc`, or the call would have passed).
    pub(super) fn decode(self, reply: &[i64]) -> Result<Verdict, CacheError> {
        let &[r] = reply else {
            return Err(CacheError::Store(format!(
                "rate limit script returned {} values, expected 1",
                reply.len()
            )));
        };
        let bad = || CacheError::Store(format!("rate limit script returned {r}, out of range"));
        // Points left once `ahead` microseconds of the burst are taken.
        let left = |ahead: u64| (self.burst - ahead.min(self.burst)) / self.period;
        if let Ok(ahead) = u64::try_from(r) {
            if ahead < self.inc || ahead > self.burst {
                return Err(bad());
            }
            return Ok(Verdict {
                allowed: true,
                remaining: left(ahead),
                reset_after_us: ahead,
                retry_after_us: 0,
            });
        }
        // `r < 0`: `-1 - r` is at least 0, and no overflow for `i64::MIN`.
        let ahead = (-1 - r).cast_unsigned();
        let retry = ahead
            .saturating_add(self.inc)
            .checked_sub(self.burst)
            .filter(|&t| t > 0)
            .ok_or_else(bad)?;
        Ok(Verdict {
            allowed: false,
            remaining: left(ahead),
            reset_after_us: ahead,
            retry_after_us: retry,
        })
    }
}

/// The verdict of a window script's `{allowed, remaining, reset_after_us,
/// retry_after_us}`.
pub(super) fn decode_window(r: &[i64]) -> Result<Verdict, CacheError> {
    let [allowed, remaining, reset, retry] = r else {
        return Err(CacheError::Store(format!(
            "rate limit script returned {} values, expected 4",
            r.len()
        )));
    };
    let pos = |v: i64| u64::try_from(v).unwrap_or(0);
    Ok(Verdict {
        allowed: *allowed == 1,
        remaining: pos(*remaining),
        reset_after_us: pos(*reset),
        retry_after_us: pos(*retry),
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::rate_limit::Algorithm;

    fn gcra(points: u32, window_ms: u64, cost: u32) -> Gcra {
        Gcra::of(&Policy {
            points,
            window: Duration::from_millis(window_ms),
            cost,
            algorithm: Algorithm::Gcra,
        })
    }

    #[test]
    fn constants_are_exact_integers() {
        // 10 per second: 100 ms apart, a burst of 10, cost 3.
        let g = gcra(10, 1000, 3);
        assert_eq!((g.period, g.burst, g.inc), (100_000, 1_000_000, 300_000));
        assert_eq!(g.args(), [1_000_000, 300_000]);
        // 3 per 1 s: the period rounds up, so the burst covers the window.
        let g = gcra(3, 1000, 1);
        assert_eq!((g.period, g.burst), (333_334, 1_000_002));
    }

    #[test]
    fn decodes_an_admission() {
        let g = gcra(10, 1000, 1);
        // The first call of a fresh key: one period ahead, nine left.
        assert_eq!(
            g.decode(&[100_000]).unwrap(),
            Verdict {
                allowed: true,
                remaining: 9,
                reset_after_us: 100_000,
                retry_after_us: 0
            }
        );
        // The last point of the burst.
        let v = g.decode(&[1_000_000]).unwrap();
        assert!(v.allowed);
        assert_eq!((v.remaining, v.reset_after_us), (0, 1_000_000));
        // Part of a period refilled: still floor.
        assert_eq!(g.decode(&[950_001]).unwrap().remaining, 0);
        assert_eq!(g.decode(&[950_000]).unwrap().remaining, 0);
        assert_eq!(g.decode(&[900_000]).unwrap().remaining, 1);
    }

    #[test]
    fn decodes_a_denial() {
        let g = gcra(10, 1000, 1);
        // The key is a full burst ahead: `-1 - 1_000_000`.
        assert_eq!(
            g.decode(&[-1_000_001]).unwrap(),
            Verdict {
                allowed: false,
                remaining: 0,
                reset_after_us: 1_000_000,
                retry_after_us: 100_000
            }
        );
        // Almost a period refilled: one microsecond to wait.
        let v = g.decode(&[-1 - 900_001]).unwrap();
        assert!(!v.allowed);
        assert_eq!((v.reset_after_us, v.retry_after_us), (900_001, 1));
        // A cost above the points is denied on a fresh key (`tat == now`):
        // the reply is -1, the wait the whole excess.
        let g = gcra(2, 1000, 3);
        let v = g.decode(&[-1]).unwrap();
        assert_eq!(
            (v.allowed, v.remaining, v.reset_after_us, v.retry_after_us),
            (false, 2, 0, 500_000)
        );
        // A cost of 3 out of 10 with 8 left: denied, 8 reported left.
        let g = gcra(10, 1000, 3);
        let v = g.decode(&[-1 - 800_000]).unwrap();
        assert!(!v.allowed);
        assert_eq!(v.remaining, 2);
        let v = g.decode(&[-1 - 750_000]).unwrap();
        assert_eq!((v.remaining, v.retry_after_us), (2, 50_000));
    }

    #[test]
    fn garbage_replies_are_store_errors() {
        let g = gcra(10, 1000, 1);
        for reply in [
            &[][..],
            &[1, 2],
            &[1, 2, 3, 4],
            // Admitted but less than one increment ahead, or past the burst.
            &[0],
            &[99_999],
            &[1_000_001],
            &[i64::MAX],
            // Denied though the call fits: `tat - now <= burst - inc`.
            &[-1],
            &[-1 - 900_000],
        ] {
            match g.decode(reply) {
                Err(CacheError::Store(_)) => {}
                other => panic!("{reply:?} gave {other:?}"),
            }
        }
        // A denial further ahead than the burst (a server clock that went
        // back, after a failover) decodes, down to the extreme: no panic.
        for r in [-1 - (1 << 52), i64::MIN + 1, i64::MIN] {
            let v = g.decode(&[r]).unwrap();
            assert!(!v.allowed && v.remaining == 0, "{r}: {v:?}");
        }
    }

    #[test]
    fn window_replies() {
        let v = decode_window(&[1, 4, 10, 0]).unwrap();
        assert!(v.allowed);
        assert_eq!(v.remaining, 4);
        assert!(!decode_window(&[0, -3, -1, 7]).unwrap().allowed);
        assert_eq!(decode_window(&[0, -3, -1, 7]).unwrap().remaining, 0);
        for r in [&[][..], &[1], &[1, 2, 3, 4, 5]] {
            assert!(matches!(decode_window(r), Err(CacheError::Store(_))));
        }
    }
}
