//! A strict reader of the Prometheus text exposition format (0.0.4), for the metrics tests and
//! the harness's last scrape: every line is a `# HELP`, a `# TYPE`, another comment, a blank
//! line or a sample, and every sample belongs to a family with a `# TYPE`.

use std::collections::{BTreeMap, HashMap};

#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

#[derive(Debug, Default)]
pub struct Exposition {
    pub samples: Vec<Sample>,
    /// Family name → its type (`counter`, `gauge`, `histogram`, `summary`, `untyped`).
    pub types: HashMap<String, String>,
}

impl Exposition {
    /// Parses `text`, or says which line is wrong and why.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut out = Self::default();
        for (n, line) in text.lines().enumerate() {
            let fail = |why: &str| format!("line {}: {why}: {line:?}", n + 1);
            if line.trim().is_empty() {
                continue;
            }
            if let Some(comment) = line.strip_prefix('#') {
                let mut words = comment.trim_start().splitn(3, ' ');
                match (words.next(), words.next(), words.next()) {
                    (Some("TYPE"), Some(name), Some(kind)) => {
                        if !is_metric_name(name) {
                            return Err(fail("bad metric name"));
                        }
                        if !["counter", "gauge", "histogram", "summary", "untyped"]
                            .contains(&kind.trim())
                        {
                            return Err(fail("unknown type"));
                        }
                        if out
                            .types
                            .insert(name.to_owned(), kind.trim().to_owned())
                            .is_some()
                        {
                            return Err(fail("a second TYPE for the family"));
                        }
                    }
                    (Some("HELP"), Some(name), _) if !is_metric_name(name) => {
                        return Err(fail("bad metric name"));
                    }
                    _ => {}
                }
                continue;
            }
            let sample = parse_sample(line).map_err(|why| fail(&why))?;
            if out.family_type(&sample.name).is_none() {
                return Err(fail("a sample without a TYPE line for its family"));
            }
            out.samples.push(sample);
        }
        Ok(out)
    }

    /// The type of the family `name` belongs to (`x_bucket`, `x_sum`, `x_count` are `x`'s).
    pub fn family_type(&self, name: &str) -> Option<&str> {
        if let Some(kind) = self.types.get(name) {
            return Some(kind);
        }
        ["_bucket", "_sum", "_count"].iter().find_map(|suffix| {
            let family = name.strip_suffix(suffix)?;
            self.types
                .get(family)
                .filter(|k| *k == "histogram" || *k == "summary")
                .map(String::as_str)
        })
    }

    /// The value of the sample `name` whose labels include all of `labels`; the sum when several
    /// match; `None` when none does.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let matching: Vec<f64> = self
            .samples
            .iter()
            .filter(|s| s.name == name)
            .filter(|s| {
                labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|s| s.value)
            .collect();
        (!matching.is_empty()).then(|| matching.iter().sum())
    }

    /// The values one label takes across the samples of `name`.
    pub fn label_values(&self, name: &str, label: &str) -> Vec<String> {
        let mut values: Vec<String> = self
            .samples
            .iter()
            .filter(|s| s.name == name)
            .filter_map(|s| s.labels.get(label).cloned())
            .collect();
        values.sort();
        values.dedup();
        values
    }
}

fn is_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn is_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// `name{label="value",…} value [timestamp]`
fn parse_sample(line: &str) -> Result<Sample, String> {
    let name_end = line.find(['{', ' ']).ok_or("no value")?;
    let name = &line[..name_end];
    if !is_metric_name(name) {
        return Err("bad metric name".into());
    }
    let mut rest = &line[name_end..];
    let mut labels = BTreeMap::new();
    if let Some(after) = rest.strip_prefix('{') {
        let mut chars = after.char_indices().peekable();
        loop {
            // A label name, `=`, a quoted value; then `,` or `}`.
            let start = match chars.peek() {
                Some((_, '}')) => {
                    let (i, _) = chars.next().unwrap();
                    rest = &after[i + 1..];
                    break;
                }
                Some((i, _)) => *i,
                None => return Err("unterminated label set".into()),
            };
            let eq = after[start..].find('=').ok_or("a label without =")? + start;
            let label = &after[start..eq];
            if !is_label_name(label) {
                return Err(format!("bad label name {label:?}"));
            }
            while chars.peek().is_some_and(|(i, _)| *i <= eq) {
                chars.next();
            }
            if chars.next().map(|(_, c)| c) != Some('"') {
                return Err("a label value is not quoted".into());
            }
            let mut value = String::new();
            loop {
                match chars.next().map(|(_, c)| c) {
                    Some('"') => break,
                    Some('\\') => match chars.next().map(|(_, c)| c) {
                        Some('\\') => value.push('\\'),
                        Some('"') => value.push('"'),
                        Some('n') => value.push('\n'),
                        _ => return Err("a bad escape in a label value".into()),
                    },
                    Some('\n') | None => return Err("an unterminated label value".into()),
                    Some(c) => value.push(c),
                }
            }
            if labels.insert(label.to_owned(), value).is_some() {
                return Err(format!("label {label:?} twice"));
            }
            match chars.peek().map(|(_, c)| *c) {
                Some(',') => {
                    chars.next();
                }
                Some('}') => {}
                _ => return Err("expected , or } after a label".into()),
            }
        }
    }
    let mut fields = rest.split_whitespace();
    let value = fields.next().ok_or("no value")?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        v => v.parse::<f64>().map_err(|_| format!("bad value {v:?}"))?,
    };
    if let Some(timestamp) = fields.next() {
        timestamp
            .parse::<i64>()
            .map_err(|_| format!("bad timestamp {timestamp:?}"))?;
    }
    if fields.next().is_some() {
        return Err("trailing text".into());
    }
    Ok(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

#[test]
fn the_reader_accepts_the_format_and_refuses_what_is_not() {
    let text = "# HELP a_total Things.\n# TYPE a_total counter\na_total{route=\"/x/{id}\",status=\"200\"} 3\n\n\
                # TYPE h histogram\nh_bucket{le=\"0.5\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 0.75\nh_count 2\n\
                # TYPE g gauge\ng{v=\"a\\\"b\\\\c\"} -1.5e3 1700000000\n";
    let parsed = Exposition::parse(text).unwrap();
    assert_eq!(parsed.value("a_total", &[("status", "200")]), Some(3.0));
    assert_eq!(parsed.value("h_count", &[]), Some(2.0));
    assert_eq!(parsed.value("g", &[("v", "a\"b\\c")]), Some(-1500.0));
    for bad in [
        "a_total 1\n",                              // no TYPE
        "# TYPE a counter\na{x=1} 1\n",             // unquoted
        "# TYPE a counter\na{x=\"1\" 1\n",          // unterminated
        "# TYPE a counter\na one\n",                // not a number
        "# TYPE a counter\na{x=\"1\",x=\"2\"} 1\n", // label twice
        "# TYPE 1a counter\n",                      // bad name
    ] {
        assert!(Exposition::parse(bad).is_err(), "{bad:?} was accepted");
    }
}
