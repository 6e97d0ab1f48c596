//! Reads the init's stage lines off the console (`[  12.345678] phase: dhcp ok eth0
//! 192.0.2.101/24 in 312ms`) into a table of time per stage, printed after each test.

/// One stage line: which stage, its own duration, and the kernel timestamp it was printed at.
#[derive(Debug, Clone, PartialEq)]
pub struct StageTime {
    /// `boot` or `target` (which init run the line belongs to; flips at `init stage=target`).
    pub run: String,
    /// Stage name (`dhcp`, `fetch kernel`, ...).
    pub stage: String,
    /// `ok` or `failed`.
    pub outcome: String,
    /// Duration the init reported, in ms.
    pub ms: u64,
    /// Kernel timestamp of the line, in seconds since that kernel started (None without one).
    pub kernel_secs: Option<f64>,
}

/// The part of a console line after `phase: `, if it is one of ours.
pub fn phase_msg(line: &str) -> Option<&str> {
    line.find("phase: ").map(|i| &line[i + "phase: ".len()..])
}

/// Kernel timestamp `[  12.345678]` at the start of a line, in seconds.
pub fn kernel_secs(line: &str) -> Option<f64> {
    let rest = line.trim_start().strip_prefix('[')?;
    let end = rest.find(']')?;
    rest[..end].trim().parse().ok()
}

fn trailing_ms(s: &str) -> Option<u64> {
    s.trim_end()
        .strip_suffix("ms")?
        .rsplit(' ')
        .next()?
        .parse()
        .ok()
}

/// Parses one stage line: `<stage> ok ... in <N>ms` or `<stage> failed after <N>ms: ...`.
pub fn parse(run: &str, line: &str) -> Option<StageTime> {
    let msg = phase_msg(line)?;
    let ks = kernel_secs(line);
    if let Some(i) = msg.find(" failed after ") {
        let rest = &msg[i + " failed after ".len()..];
        let ms = rest.split("ms").next()?.trim().parse().ok()?;
        return Some(StageTime {
            run: run.into(),
            stage: msg[..i].to_string(),
            outcome: "failed".into(),
            ms,
            kernel_secs: ks,
        });
    }
    if let Some(rest) = msg.strip_prefix("target ready") {
        let ms = trailing_ms(rest)?;
        return Some(StageTime {
            run: run.into(),
            stage: "ready".into(),
            outcome: "ok".into(),
            ms,
            kernel_secs: ks,
        });
    }
    let i = msg.find(" ok")?;
    let stage = &msg[..i];
    if stage.is_empty() || stage.contains(' ') {
        return None;
    }
    let mut ms = trailing_ms(msg)?;
    let rest = &msg[i + 3..];
    let mut name = stage.to_string();
    if stage == "fetch" {
        if let Some(artifact) = rest.split_whitespace().next() {
            name = format!("fetch {artifact}");
        }
    }
    if !msg.contains(" in ") {
        ms = 0;
    }
    Some(StageTime {
        run: run.into(),
        stage: name,
        outcome: "ok".into(),
        ms,
        kernel_secs: ks,
    })
}

/// All stage lines in `lines`, tagged with the init run they belong to.
pub fn stages(lines: &[String]) -> Vec<StageTime> {
    let mut run = "boot".to_string();
    let mut out = Vec::new();
    for l in lines {
        if let Some(msg) = phase_msg(l) {
            if let Some(rest) = msg.strip_prefix("init stage=") {
                run = rest.split_whitespace().next().unwrap_or("?").to_string();
                continue;
            }
        }
        if let Some(s) = parse(&run, l) {
            out.push(s);
        }
    }
    out
}

/// The address in a `phase: dhcp ok <iface> <addr>/<prefix> ...` line.
pub fn dhcp_addr(line: &str) -> Option<String> {
    let msg = phase_msg(line)?;
    let rest = msg.strip_prefix("dhcp ok ")?;
    let cidr = rest.split_whitespace().nth(1)?;
    Some(cidr.split('/').next()?.to_string())
}

/// A printable table: run, stage, outcome, ms, kernel timestamp.
pub fn table(vm: &str, lines: &[String]) -> String {
    let rows = stages(lines);
    let mut s = format!(
        "--- stage times for VM {vm} ---\n{:<7} {:<22} {:<7} {:>8} {:>10}\n",
        "run", "stage", "result", "ms", "at [s]"
    );
    for r in &rows {
        let at = r
            .kernel_secs
            .map(|k| format!("{k:.3}"))
            .unwrap_or_else(|| "-".into());
        s.push_str(&format!(
            "{:<7} {:<22} {:<7} {:>8} {:>10}\n",
            r.run, r.stage, r.outcome, r.ms, at
        ));
    }
    if rows.is_empty() {
        s.push_str("(no phase stage lines on the console)\n");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dhcp_line_with_kernel_timestamp_is_parsed() {
        let l = "[   12.345678] phase: dhcp ok eth0 192.0.2.101/24 in 312ms";
        let s = parse("boot", l).expect("parsed");
        assert_eq!(s.stage, "dhcp");
        assert_eq!(s.ms, 312);
        assert_eq!(s.kernel_secs, Some(12.345678));
        assert_eq!(dhcp_addr(l).as_deref(), Some("192.0.2.101"));
    }

    #[test]
    fn fetch_lines_are_named_by_artifact_and_failures_are_kept() {
        let lines: Vec<String> = [
            "phase: init stage=boot version=0.1.0 mode=local",
            "phase: fetch ok rootfs 1234 bytes in 900ms",
            "phase: init stage=target version=0.1.0 mode=local",
            "phase: verify failed after 17ms: hash mismatch",
            "phase: cmdline unknown key phase.foo",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let st = stages(&lines);
        assert_eq!(st.len(), 2);
        assert_eq!(
            (st[0].run.as_str(), st[0].stage.as_str(), st[0].ms),
            ("boot", "fetch rootfs", 900)
        );
        assert_eq!(
            (st[1].run.as_str(), st[1].outcome.as_str(), st[1].ms),
            ("target", "failed", 17)
        );
    }

    #[test]
    fn non_phase_lines_are_ignored() {
        assert!(parse("boot", "[ 1.0] virtio_net virtio0 eth0: renamed").is_none());
        assert!(dhcp_addr("phase: link ok eth0 in 3ms").is_none());
    }
}
