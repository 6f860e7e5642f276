//! Deliberately simple reference implementations of the analyses, written
//! from the definitions in ADR 0005 with plain loops over all events and no
//! SQL, no sorting tricks and no shared code with the crate under test.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{Datelike, NaiveDate, NaiveDateTime, TimeZone, Timelike};
use chrono_tz::Tz;

#[derive(Debug, Clone)]
pub struct Event {
    pub collection: &'static str,
    pub user: String,
    pub t: i64,
    pub country: Option<&'static str>,
    pub value: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filter {
    All,
    ValueAbove3,
    CountryDe,
}

impl Filter {
    pub fn sql(self) -> Option<&'static str> {
        match self {
            Filter::All => None,
            Filter::ValueAbove3 => Some("value > 3"),
            Filter::CountryDe => Some("country = 'de'"),
        }
    }

    pub fn matches(self, e: &Event) -> bool {
        match self {
            Filter::All => true,
            Filter::ValueAbove3 => e.value > 3,
            Filter::CountryDe => e.country == Some("de"),
        }
    }
}

/// An event kind: a collection and a filter.
pub type Kind = (&'static str, Filter);

pub fn is(kind: &Kind, e: &Event) -> bool {
    e.collection == kind.0 && kind.1.matches(e)
}

#[derive(Debug, Clone)]
pub struct Range {
    pub start: i64,
    pub end: i64,
    pub tz: Tz,
}

impl Range {
    pub fn new(start: &str, end: &str, tz: Tz) -> Self {
        let midnight = |d: &str, plus: u64| {
            let date = NaiveDate::parse_from_str(d, "%Y-%m-%d").expect("valid test data")
                + chrono::Days::new(plus);
            tz.from_local_datetime(&date.and_hms_opt(0, 0, 0).expect("valid test data"))
                .earliest()
                .expect("valid test data")
                .timestamp_millis()
        };
        Self {
            start: midnight(start, 0),
            end: midnight(end, 1),
            tz,
        }
    }

    pub fn local(&self, t: i64) -> NaiveDateTime {
        self.tz
            .timestamp_millis_opt(t)
            .single()
            .expect("valid test data")
            .naive_local()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Ordered,
    Strict,
    Any,
}

#[derive(Debug, Clone)]
pub struct Funnel {
    pub steps: Vec<Kind>,
    /// (kind, from, to), 1-based steps.
    pub exclusions: Vec<(Kind, usize, usize)>,
    pub window: Option<i64>,
    pub mode: Mode,
    pub by_country: bool,
}

fn min_time(events: &[&Event], pick: impl Fn(&Event) -> bool) -> Option<i64> {
    events.iter().filter(|e| pick(e)).map(|e| e.t).min()
}

impl Funnel {
    /// The step times of one person's counted attempt.
    fn attempt(&self, events: &[&Event], range: &Range) -> Vec<i64> {
        let n = self.steps.len();
        let window = self.window.unwrap_or(i64::MAX / 4);
        let mut starts: Vec<i64> = events
            .iter()
            .filter(|e| e.t >= range.start && e.t < range.end)
            .filter(|e| match self.mode {
                Mode::Any => self.steps.iter().any(|k| is(k, e)),
                _ => is(&self.steps[0], e),
            })
            .map(|e| e.t)
            .collect();
        starts.sort();
        let mut best: Vec<i64> = Vec::new();
        for start in starts {
            let deadline = start + window;
            let mut chain = vec![start];
            match self.mode {
                Mode::Ordered => {
                    while chain.len() < n {
                        let (prev, step) = (
                            *chain.last().expect("valid test data"),
                            &self.steps[chain.len()],
                        );
                        match min_time(events, |e| is(step, e) && e.t > prev && e.t <= deadline) {
                            Some(t) => chain.push(t),
                            None => break,
                        }
                    }
                }
                Mode::Strict => {
                    while chain.len() < n {
                        let prev = *chain.last().expect("valid test data");
                        let funnel_event = |e: &Event| self.steps.iter().any(|k| is(k, e));
                        let Some(next) =
                            min_time(events, |e| funnel_event(e) && e.t > prev && e.t <= deadline)
                        else {
                            break;
                        };
                        let step = &self.steps[chain.len()];
                        if events.iter().any(|e| e.t == next && is(step, e)) {
                            chain.push(next);
                        } else {
                            break;
                        }
                    }
                }
                Mode::Any => {
                    let mut times: Vec<i64> = self
                        .steps
                        .iter()
                        .filter_map(|k| {
                            min_time(events, |e| is(k, e) && e.t >= start && e.t <= deadline)
                        })
                        .collect();
                    times.sort();
                    chain = times;
                }
            }
            let excluded = self.exclusions.iter().any(|(kind, from, to)| {
                if chain.len() < *from {
                    return false;
                }
                let low = chain[from - 1];
                events.iter().any(|e| {
                    is(kind, e)
                        && e.t > low
                        && match chain.get(to - 1) {
                            Some(high) => e.t < *high,
                            None => e.t <= deadline,
                        }
                })
            });
            if !excluded && chain.len() > best.len() {
                best = chain;
            }
        }
        best
    }

    /// Each person's (or person and country's) counted attempt.
    pub fn attempts(
        &self,
        all: &[Event],
        range: &Range,
    ) -> BTreeMap<(String, Option<&'static str>), Vec<i64>> {
        let until = range.end + self.window.unwrap_or(0);
        let mut people: BTreeMap<(String, Option<&'static str>), Vec<&Event>> = BTreeMap::new();
        for e in all.iter().filter(|e| e.t >= range.start && e.t < until) {
            let relevant =
                self.steps.iter().any(|k| is(k, e)) || self.exclusions.iter().any(|x| is(&x.0, e));
            if relevant {
                let key = (
                    e.user.clone(),
                    if self.by_country { e.country } else { None },
                );
                people.entry(key).or_default().push(e);
            }
        }
        people
            .into_iter()
            .map(|(key, events)| {
                let chain = self.attempt(&events, range);
                (key, chain)
            })
            .filter(|(_, chain)| !chain.is_empty())
            .collect()
    }
}

pub fn median(mut values: Vec<f64>) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    Some(if values.len().is_multiple_of(2) {
        (values[mid - 1] + values[mid]) / 2.0
    } else {
        values[mid]
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Day,
    Week,
    Month,
}

/// The first day of the period holding `date`.
pub fn period_start(unit: Unit, date: NaiveDate) -> NaiveDate {
    match unit {
        Unit::Day => date,
        Unit::Week => date - chrono::Days::new(u64::from(date.weekday().num_days_from_monday())),
        Unit::Month => date.with_day(1).expect("valid test data"),
    }
}

/// How many periods `later` is after `earlier` (both period starts).
pub fn periods_between(unit: Unit, earlier: NaiveDate, later: NaiveDate) -> i64 {
    match unit {
        Unit::Day => (later - earlier).num_days(),
        Unit::Week => (later - earlier).num_days() / 7,
        Unit::Month => {
            (i64::from(later.year()) * 12 + i64::from(later.month()))
                - (i64::from(earlier.year()) * 12 + i64::from(earlier.month()))
        }
    }
}

#[derive(Debug, Clone)]
pub struct Retention {
    pub first: Kind,
    /// `None`: any event returns.
    pub returning: Option<Kind>,
    pub unit: Unit,
    pub first_time: bool,
    pub periods: i64,
    pub by_country: bool,
}

impl Retention {
    /// (cohort date or country label, lead (-1: the cohort's size), people).
    pub fn cells(&self, all: &[Event], range: &Range) -> BTreeMap<(String, i64), i64> {
        let mut out: BTreeMap<(String, i64), i64> = BTreeMap::new();
        let users: BTreeSet<&String> = all.iter().map(|e| &e.user).collect();
        for user in users {
            let mine: Vec<&Event> = all.iter().filter(|e| &e.user == user).collect();
            let firsts: Vec<&Event> = mine
                .iter()
                .copied()
                .filter(|e| is(&self.first, e) && e.t < range.end)
                .filter(|e| self.first_time || e.t >= range.start)
                .collect();
            let returns: BTreeSet<NaiveDate> = mine
                .iter()
                .filter(|e| self.returning.as_ref().is_none_or(|k| is(k, e)) && e.t >= range.start)
                .map(|e| period_start(self.unit, range.local(e.t).date()))
                .collect();
            let countries: BTreeSet<Option<&str>> = if self.by_country {
                firsts.iter().map(|e| e.country).collect()
            } else {
                BTreeSet::from([None])
            };
            for country in countries {
                let firsts: Vec<&&Event> = firsts
                    .iter()
                    .filter(|e| !self.by_country || e.country == country)
                    .collect();
                let mut cohorts: BTreeSet<NaiveDate> = BTreeSet::new();
                if self.first_time {
                    let earliest = firsts.iter().min_by_key(|e| e.t);
                    if let Some(e) = earliest.filter(|e| e.t >= range.start) {
                        cohorts.insert(period_start(self.unit, range.local(e.t).date()));
                    }
                } else {
                    for e in &firsts {
                        cohorts.insert(period_start(self.unit, range.local(e.t).date()));
                    }
                }
                for cohort in cohorts {
                    let key = match (self.by_country, country) {
                        (true, Some(c)) => c.to_string(),
                        (true, None) => "(not set)".to_string(),
                        (false, _) => cohort.format("%Y-%m-%d").to_string(),
                    };
                    *out.entry((key.clone(), -1)).or_default() += 1;
                    for back in &returns {
                        let after = periods_between(self.unit, cohort, *back);
                        if after >= 1 && after <= self.periods {
                            *out.entry((key.clone(), after - 1)).or_default() += 1;
                        }
                    }
                }
            }
        }
        out
    }
}

/// Rakam's time reference labels, from chrono's calendar.
pub fn time_label(reference: &str, local: NaiveDateTime) -> String {
    match reference {
        "HOUR_OF_DAY" => format!("{:02}:00", local.hour()),
        "DAY_OF_WEEK" => local.format("%A").to_string(),
        "MONTH_OF_YEAR" => local.format("%B").to_string(),
        "HOUR" => local.format("%Y-%m-%d %H:00").to_string(),
        "DAY" => local.date().format("%Y-%m-%d").to_string(),
        "MONTH" => period_start(Unit::Month, local.date())
            .format("%Y-%m-%d")
            .to_string(),
        "YEAR" => local.format("%Y-01-01").to_string(),
        "WEEK" => period_start(Unit::Week, local.date())
            .format("%Y-%m-%d")
            .to_string(),
        "DAY_PART" => match local.hour() {
            0..=5 => "Night",
            6..=11 => "Morning",
            12..=17 => "Afternoon",
            _ => "Evening",
        }
        .to_string(),
        other => panic!("no reference label for {other}"),
    }
}

#[derive(Debug, Clone)]
pub struct Flow {
    pub anchor: Kind,
    pub next: bool,
    pub depth: usize,
    pub window: i64,
    pub gap: Option<i64>,
    /// Every collection, sorted: a path's labels index into it.
    pub collections: Vec<&'static str>,
}

impl Flow {
    pub fn paths(&self, all: &[Event], range: &Range) -> Vec<Vec<&'static str>> {
        let users: BTreeSet<&String> = all.iter().map(|e| &e.user).collect();
        let mut paths = Vec::new();
        for user in users {
            let mut mine: Vec<(i64, usize, bool, &'static str)> = all
                .iter()
                .filter(|e| {
                    &e.user == user
                        && e.t >= range.start - self.window
                        && e.t < range.end + self.window
                })
                .map(|e| {
                    let label = self
                        .collections
                        .iter()
                        .position(|c| *c == e.collection)
                        .expect("valid test data");
                    let anchor = is(&self.anchor, e) && e.t >= range.start && e.t < range.end;
                    (e.t, label, !anchor, e.collection)
                })
                .collect();
            mine.sort();
            let anchors: Vec<usize> = (0..mine.len()).filter(|i| !mine[*i].2).collect();
            let Some(&at) = (if self.next {
                anchors.first()
            } else {
                anchors.last()
            }) else {
                continue;
            };
            let order: Vec<usize> = if self.next {
                (at + 1..mine.len()).collect()
            } else {
                (0..at).rev().collect()
            };
            let mut path = vec![mine[at].3];
            let mut previous = mine[at].0;
            for i in order {
                let t = mine[i].0;
                let near = (t - mine[at].0).abs() <= self.window;
                let no_gap = self.gap.is_none_or(|g| (t - previous).abs() <= g);
                if path.len() > self.depth || !near || !no_gap {
                    break;
                }
                path.push(mine[i].3);
                previous = t;
            }
            paths.push(path);
        }
        paths
    }
}
