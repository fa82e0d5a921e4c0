//! Spoken numbers built by concatenating short recordings (`num_0`, `num_20`, `num_hundred`...).
//!
//! Italian and English read whole numbers up to 999 999; any other language, or a number
//! outside that range or written with leading zeros, is read digit by digit.

/// Every recording name a number may need, in any language.
pub(crate) fn all_prompt_names() -> Vec<String> {
    let mut v: Vec<String> = (0..20).map(|n| format!("num_{n}")).collect();
    for t in (20..100).step_by(10) {
        v.push(format!("num_{t}"));
        v.push(format!("num_{t}e"));
    }
    for h in (100..1000).step_by(100) {
        v.push(format!("num_{h}"));
    }
    for extra in ["num_1000", "num_mila", "num_hundred", "num_thousand"] {
        v.push(extra.to_string());
    }
    v
}

/// The recordings that read the digit string `digits` one digit at a time.
pub(crate) fn digit_by_digit(digits: &str) -> Vec<String> {
    digits
        .chars()
        .filter(char::is_ascii_digit)
        .map(|d| format!("num_{d}"))
        .collect()
}

/// The recordings that read `digits` as a whole number in `lang`, when that language has
/// number rules here and the value is in range; None means "read it digit by digit".
pub(crate) fn as_number(lang: &str, digits: &str) -> Option<Vec<String>> {
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if digits.len() > 1 && digits.starts_with('0') {
        return None;
    }
    let n: u32 = digits.parse().ok()?;
    if n > 999_999 {
        return None;
    }
    let mut out = Vec::new();
    match lang {
        "it" => italian(n, &mut out),
        "en" => english(n, &mut out),
        _ => return None,
    }
    Some(out)
}

fn push(out: &mut Vec<String>, n: u32) {
    out.push(format!("num_{n}"));
}

fn italian(n: u32, out: &mut Vec<String>) {
    match n {
        0..=19 => push(out, n),
        20..=99 => {
            let (t, u) = (n / 10 * 10, n % 10);
            match u {
                0 => push(out, t),
                // "ventuno", "trentotto": the tens word drops its final vowel before uno/otto.
                1 | 8 => {
                    out.push(format!("num_{t}e"));
                    push(out, u);
                }
                _ => {
                    push(out, t);
                    push(out, u);
                }
            }
        }
        100..=999 => {
            push(out, n / 100 * 100);
            let rest = n % 100;
            if rest > 0 {
                italian(rest, out);
            }
        }
        _ => {
            let (th, r) = (n / 1000, n % 1000);
            if th == 1 {
                push(out, 1000);
            } else {
                italian(th, out);
                out.push("num_mila".into());
            }
            if r > 0 {
                italian(r, out);
            }
        }
    }
}

fn english(n: u32, out: &mut Vec<String>) {
    match n {
        0..=19 => push(out, n),
        20..=99 => {
            push(out, n / 10 * 10);
            let unit = n % 10;
            if unit > 0 {
                push(out, unit);
            }
        }
        100..=999 => {
            push(out, n / 100);
            out.push("num_hundred".into());
            let rest = n % 100;
            if rest > 0 {
                english(rest, out);
            }
        }
        _ => {
            english(n / 1000, out);
            out.push("num_thousand".into());
            let rest = n % 1000;
            if rest > 0 {
                english(rest, out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn it(n: &str) -> String {
        as_number("it", n).unwrap().join(" ")
    }
    fn en(n: &str) -> String {
        as_number("en", n).unwrap().join(" ")
    }

    #[test]
    fn italian_numbers() {
        assert_eq!(it("7"), "num_7");
        assert_eq!(it("17"), "num_17");
        assert_eq!(it("20"), "num_20");
        assert_eq!(it("21"), "num_20e num_1");
        assert_eq!(it("38"), "num_30e num_8");
        assert_eq!(it("45"), "num_40 num_5");
        assert_eq!(it("100"), "num_100");
        assert_eq!(it("312"), "num_300 num_12");
        assert_eq!(it("999"), "num_900 num_90 num_9");
        assert_eq!(it("1001"), "num_1000 num_1");
        assert_eq!(it("2024"), "num_2 num_mila num_20 num_4");
    }

    #[test]
    fn english_numbers() {
        assert_eq!(en("0"), "num_0");
        assert_eq!(en("21"), "num_20 num_1");
        assert_eq!(en("300"), "num_3 num_hundred");
        assert_eq!(en("415"), "num_4 num_hundred num_15");
        assert_eq!(
            en("12345"),
            "num_12 num_thousand num_3 num_hundred num_40 num_5"
        );
    }

    #[test]
    fn falls_back_to_digits() {
        assert_eq!(as_number("de", "42"), None);
        assert_eq!(as_number("it", "0612"), None);
        assert_eq!(as_number("it", "1000000"), None);
        assert_eq!(as_number("it", "4x"), None);
        assert_eq!(digit_by_digit("06-12").join(" "), "num_0 num_6 num_1 num_2");
        let all = all_prompt_names();
        for name in as_number("it", "987654").unwrap() {
            assert!(all.contains(&name), "{name} missing from the list");
        }
        for name in as_number("en", "987654").unwrap() {
            assert!(all.contains(&name), "{name} missing from the list");
        }
    }
}
