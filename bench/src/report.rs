//! Collects the runs of the whole-program comparison and turns them into tables: medians per
//! program and allocator, ratios of tcalloc to glibc and to mimalloc, and geometric means per
//! group of programs.

use crate::Sample;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use tcalloc_bench::programs::{Kind, Program};
use tcalloc_bench::ALLOCATORS;

/// Medians of one program under one allocator.
#[derive(Clone, Copy, Debug)]
pub struct Median {
    pub seconds: f64,
    pub peak_rss_kib: u64,
}

pub struct Results {
    programs: Vec<(&'static str, Kind, &'static str)>,
    samples: BTreeMap<(&'static str, &'static str), Vec<Sample>>,
}

pub fn median_f64(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

pub fn geomean(v: &[f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    (v.iter().map(|x| x.ln()).sum::<f64>() / v.len() as f64).exp()
}

pub fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Small => "small objects",
        Kind::Large => "large objects",
        Kind::Threads => "threads",
        Kind::Realloc => "realloc",
    }
}

impl Results {
    pub fn new(programs: &[&Program]) -> Results {
        Results {
            programs: programs.iter().map(|p| (p.name, p.kind, p.what)).collect(),
            samples: BTreeMap::new(),
        }
    }

    pub fn add(&mut self, program: &'static str, allocator: &'static str, s: Sample) {
        self.samples.entry((program, allocator)).or_default().push(s);
    }

    pub fn median(&self, program: &str, allocator: &str) -> Option<Median> {
        let key = self.samples.keys().find(|(p, a)| *p == program && *a == allocator)?;
        let v = &self.samples[key];
        let mut rss: Vec<u64> = v.iter().map(|s| s.peak_rss_kib).collect();
        rss.sort_unstable();
        Some(Median {
            seconds: median_f64(v.iter().map(|s| s.seconds).collect()),
            peak_rss_kib: rss[rss.len() / 2],
        })
    }

    /// Program names in report order.
    pub fn program_names(&self) -> Vec<&'static str> {
        self.programs.iter().map(|p| p.0).collect()
    }

    /// tcalloc's time divided by `other`'s, for one program.
    pub fn ratio(&self, program: &str, other: &str) -> Option<f64> {
        Some(self.median(program, "tcalloc")?.seconds / self.median(program, other)?.seconds)
    }

    fn rss_ratio(&self, program: &str, other: &str) -> Option<f64> {
        let t = self.median(program, "tcalloc")?.peak_rss_kib as f64;
        Some(t / self.median(program, other)?.peak_rss_kib as f64)
    }

    /// Whether the run has a program of group `kind` (any program for `None`).
    fn has(&self, kind: Option<Kind>) -> bool {
        self.programs.iter().any(|p| kind.is_none_or(|k| p.1 == k))
    }

    /// Geometric means of tcalloc's time ratios to `other` over a group (or all programs).
    fn geomean_ratio(&self, kind: Option<Kind>, other: &str) -> f64 {
        let ratios: Vec<f64> = self
            .programs
            .iter()
            .filter(|p| kind.is_none_or(|k| p.1 == k))
            .filter_map(|p| self.ratio(p.0, other))
            .collect();
        geomean(&ratios)
    }

    /// The plain-text table printed at the end of a run.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = write!(out, "{:<18}", "time (ms)");
        for a in ALLOCATORS {
            let _ = write!(out, "{a:>10}");
        }
        let _ = writeln!(
            out,
            "{:>10}{:>10}{:>12}{:>12}",
            "tc/glibc", "tc/mi", "tc rss/mi", "tc rss MiB"
        );
        for (name, _, _) in &self.programs {
            let _ = write!(out, "{name:<18}");
            for a in ALLOCATORS {
                match self.median(name, a) {
                    Some(m) => write!(out, "{:>10.1}", m.seconds * 1e3),
                    None => write!(out, "{:>10}", "-"),
                }
                .ok();
            }
            let fmt = |r: Option<f64>| r.map(|r| format!("{r:.2}")).unwrap_or_else(|| "-".into());
            let rss = self.median(name, "tcalloc").map(|m| m.peak_rss_kib as f64 / 1024.0);
            let _ = writeln!(
                out,
                "{:>10}{:>10}{:>12}{:>12}",
                fmt(self.ratio(name, "glibc")),
                fmt(self.ratio(name, "mimalloc")),
                fmt(self.rss_ratio(name, "mimalloc")),
                rss.map(|r| format!("{r:.1}")).unwrap_or_default()
            );
        }
        // Groups with no program in this run (`--only`) are left out.
        for kind in [Kind::Small, Kind::Large, Kind::Threads, Kind::Realloc] {
            if !self.has(Some(kind)) {
                continue;
            }
            let _ = writeln!(
                out,
                "geomean {:<14} tcalloc/glibc {:.2}  tcalloc/mimalloc {:.2}  tcalloc/jemalloc {:.2}",
                kind_name(kind),
                self.geomean_ratio(Some(kind), "glibc"),
                self.geomean_ratio(Some(kind), "mimalloc"),
                self.geomean_ratio(Some(kind), "jemalloc")
            );
        }
        let _ = writeln!(
            out,
            "geomean {:<14} tcalloc/glibc {:.2}  tcalloc/mimalloc {:.2}  tcalloc/jemalloc {:.2}",
            "all",
            self.geomean_ratio(None, "glibc"),
            self.geomean_ratio(None, "mimalloc"),
            self.geomean_ratio(None, "jemalloc")
        );
        out
    }

    /// `summary.md`: the time table, the peak-RSS table and the geometric means.
    pub fn markdown(&self, reps: usize, seconds: f64) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "Median of {reps} runs per program and allocator, each in its own process, \
             interleaved; {:.0} s in all. Times in ms; ratios are tcalloc's time (or peak RSS) \
             divided by the other allocator's (below 1: tcalloc is faster or smaller).\n",
            seconds
        );
        let _ = writeln!(
            out,
            "| program | tcalloc | glibc | mimalloc | jemalloc | tcalloc/glibc | tcalloc/mimalloc | tcalloc/jemalloc |"
        );
        let _ = writeln!(out, "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
        let fmt = |r: Option<f64>| r.map(|r| format!("{r:.2}")).unwrap_or_else(|| "-".into());
        for (name, _, _) in &self.programs {
            let _ = write!(out, "| {name} |");
            for a in ALLOCATORS {
                let cell = self.median(name, a).map(|m| format!("{:.1}", m.seconds * 1e3));
                let _ = write!(out, " {} |", cell.unwrap_or_else(|| "-".into()));
            }
            let _ = writeln!(
                out,
                " {} | {} | {} |",
                fmt(self.ratio(name, "glibc")),
                fmt(self.ratio(name, "mimalloc")),
                fmt(self.ratio(name, "jemalloc"))
            );
        }
        let _ = writeln!(
            out,
            "\n| geometric mean | tcalloc/glibc | tcalloc/mimalloc | tcalloc/jemalloc |"
        );
        let _ = writeln!(out, "| --- | ---: | ---: | ---: |");
        for (label, kind) in [
            ("small objects", Some(Kind::Small)),
            ("large objects", Some(Kind::Large)),
            ("threads", Some(Kind::Threads)),
            ("realloc", Some(Kind::Realloc)),
            ("all programs", None),
        ] {
            if !self.has(kind) {
                continue;
            }
            let _ = writeln!(
                out,
                "| {label} | {:.2} | {:.2} | {:.2} |",
                self.geomean_ratio(kind, "glibc"),
                self.geomean_ratio(kind, "mimalloc"),
                self.geomean_ratio(kind, "jemalloc")
            );
        }
        let _ = writeln!(out, "\nPeak resident memory (MiB):\n");
        let _ =
            writeln!(out, "| program | tcalloc | glibc | mimalloc | jemalloc | tcalloc/mimalloc |");
        let _ = writeln!(out, "| --- | ---: | ---: | ---: | ---: | ---: |");
        for (name, _, _) in &self.programs {
            let _ = write!(out, "| {name} |");
            for a in ALLOCATORS {
                let cell =
                    self.median(name, a).map(|m| format!("{:.1}", m.peak_rss_kib as f64 / 1024.0));
                let _ = write!(out, " {} |", cell.unwrap_or_else(|| "-".into()));
            }
            let _ = writeln!(out, " {} |", fmt(self.rss_ratio(name, "mimalloc")));
        }
        let _ = writeln!(out, "\nThe programs:\n");
        for (name, _, what) in &self.programs {
            let _ = writeln!(out, "- `{name}`: {what}");
        }
        out
    }

    /// `results.csv`: one row per program and allocator.
    pub fn csv(&self) -> String {
        let mut out = String::from("program,allocator,median_ms,peak_rss_kib,runs\n");
        for (name, _, _) in &self.programs {
            for a in ALLOCATORS {
                if let Some(m) = self.median(name, a) {
                    let runs = self.samples.get(&(*name, a)).map_or(0, Vec::len);
                    let _ = writeln!(
                        out,
                        "{name},{a},{:.3},{},{runs}",
                        m.seconds * 1e3,
                        m.peak_rss_kib
                    );
                }
            }
        }
        out
    }
}

/// `instructions.md` from (allocator, instructions per pair, with the loop).
pub fn instructions_markdown(rows: &[(&str, f64, f64)]) -> String {
    let mut out = String::from(
        "Instructions per 64-byte alloc+free pair through `GlobalAlloc`, counted by \
         callgrind: (2M pairs - 1M pairs) minus the same loop without allocating, per pair.\n\n\
         | allocator | instructions per pair | with the benchmark loop |\n| --- | ---: | ---: |\n",
    );
    for (a, per_pair, with_loop) in rows {
        let _ = writeln!(out, "| {a} | {per_pair:.1} | {with_loop:.1} |");
    }
    out
}

/// A timeline: (seconds, resident MiB, phase) samples of one allocator.
pub type Timeline = (&'static str, Vec<(f64, f64, usize)>);

/// The fragmentation case of one allocator: (second size, allocator, (step, resident MiB)).
pub type Fragmentation = (usize, &'static str, Vec<(String, f64)>);

/// `memory.md`: resident memory at the end of each phase, and the fragmentation case.
pub fn memory_markdown(timelines: &[Timeline], fragmentation: &[Fragmentation]) -> String {
    let mut out = String::from(
        "Resident memory (MiB) of `memory-phases` at the end of each phase (sampled every 20 \
         ms; phases: 1 grow to 256 MiB of small blocks, 2 shrink to 32 MiB, 3 grow to 512 MiB, \
         4 free everything and idle 1.5 s, 5 grow to 128 MiB, 6 free everything and idle \
         1.5 s):\n\n| allocator | peak | end of 1 | 2 | 3 | 4 | 5 | 6 |\n\
         | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n",
    );
    for (a, samples) in timelines {
        let peak = samples.iter().map(|s| s.1).fold(0.0, f64::max);
        let _ = write!(out, "| {a} | {peak:.0} |");
        for phase in 1..=6 {
            let last = samples.iter().rfind(|s| s.2 == phase).map(|s| s.1);
            let _ = write!(out, " {} |", last.map(|v| format!("{v:.0}")).unwrap_or_default());
        }
        out.push('\n');
    }
    out.push_str(
        "\nFragmentation: 512 MiB of 64-byte objects, 90% freed at random, then 256 MiB of \
         objects of another size. Resident MiB after each step:\n\n\
         | second size | allocator | filled | freed 90% | after second size | vs mimalloc |\n\
         | ---: | --- | ---: | ---: | ---: | ---: |\n",
    );
    for (size, a, steps) in fragmentation {
        let last = steps.last().map(|s| s.1).unwrap_or(f64::NAN);
        let mi = fragmentation
            .iter()
            .find(|(s, b, _)| s == size && *b == "mimalloc")
            .and_then(|(_, _, st)| st.last().map(|s| s.1))
            .unwrap_or(f64::NAN);
        let cell = |i: usize| steps.get(i).map(|s| format!("{:.0}", s.1)).unwrap_or_default();
        let _ = writeln!(
            out,
            "| {size} | {a} | {} | {} | {} | {:.2} |",
            cell(0),
            cell(1),
            cell(2),
            last / mi
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_means() {
        assert_eq!(median_f64(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median_f64(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!((geomean(&[0.5, 2.0]) - 1.0).abs() < 1e-12);
    }

    /// A run of some programs (`--only`) summarises only the groups it ran: no NaN means.
    #[test]
    fn groups_without_programs_are_left_out() {
        let program = tcalloc_bench::programs::PROGRAMS
            .iter()
            .find(|p| p.name == "std-collections")
            .expect("a program");
        let mut results = Results::new(&[program]);
        for a in ALLOCATORS {
            let s = Sample { seconds: 0.1, cpu_seconds: 0.1, peak_rss_kib: 1024 };
            results.add(program.name, a, s);
        }
        let (table, markdown) = (results.table(), results.markdown(1, 1.0));
        for text in [&table, &markdown] {
            assert!(!text.contains("NaN"), "{text}");
            assert!(!text.contains("large objects"), "{text}");
            assert!(text.contains("small objects"), "{text}");
        }
    }
}
