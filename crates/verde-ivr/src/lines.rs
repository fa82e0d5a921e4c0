//! Line numbers of YAML keys, found by scanning the text.
//!
//! The parsed YAML value carries no positions, yet validation errors must say `file:line`. This
//! scanner tracks block-style keys by indentation and records the first line of every key path
//! (`nodes/main_menu/choices/1`, sequence items as `numbers/0`). Flow-style collections
//! (`[a, b]`, `{a: b}`) are not descended into: a lookup falls back to the closest recorded
//! ancestor, so an error always gets a plausible line even for unusual layouts.

use std::collections::HashMap;

#[derive(Debug, Default)]
pub(crate) struct LineIndex {
    lines: HashMap<String, usize>,
}

struct Frame {
    indent: usize,
    segment: String,
    is_item: bool,
    items: usize,
}

impl LineIndex {
    pub(crate) fn new(text: &str) -> Self {
        let mut index = LineIndex::default();
        let mut stack: Vec<Frame> = Vec::new();
        let mut top_items = 0usize;
        // Indentation of a key whose value is a block scalar (`|`, `>`): deeper lines are text.
        let mut block_scalar: Option<usize> = None;
        for (n, raw) in text.lines().enumerate() {
            let line_no = n + 1;
            let raw = raw.strip_suffix('\r').unwrap_or(raw);
            let content = raw.trim_start_matches(' ');
            let mut indent = raw.len() - content.len();
            if content.is_empty() || content.starts_with('#') {
                continue;
            }
            if let Some(bi) = block_scalar {
                if indent > bi {
                    continue;
                }
                block_scalar = None;
            }
            if content.starts_with("---") || content.starts_with("...") {
                stack.clear();
                continue;
            }
            let mut rest = content;
            if rest == "-" || rest.starts_with("- ") {
                // A sequence item belongs to the closest key at a smaller indent, or at the same
                // indent for YAML's "indentless" sequences under a mapping key.
                while let Some(top) = stack.last() {
                    if top.indent > indent || (top.indent == indent && top.is_item) {
                        stack.pop();
                    } else {
                        break;
                    }
                }
                let counter = match stack.last_mut() {
                    Some(parent) => &mut parent.items,
                    None => &mut top_items,
                };
                let idx = *counter;
                *counter += 1;
                stack.push(Frame {
                    indent,
                    segment: idx.to_string(),
                    is_item: true,
                    items: 0,
                });
                index.record(&stack, line_no);
                let after = rest[1..].trim_start_matches(' ');
                indent += rest.len() - after.len();
                rest = after;
                if rest.is_empty() {
                    continue;
                }
            }
            let Some((key, value)) = split_key(rest) else {
                continue;
            };
            while let Some(top) = stack.last() {
                if top.indent >= indent {
                    stack.pop();
                } else {
                    break;
                }
            }
            stack.push(Frame {
                indent,
                segment: key,
                is_item: false,
                items: 0,
            });
            index.record(&stack, line_no);
            let v = value.trim();
            let v = v.split(" #").next().unwrap_or("").trim();
            if v.starts_with('|') || v.starts_with('>') {
                block_scalar = Some(indent);
            }
        }
        index
    }

    fn record(&mut self, stack: &[Frame], line: usize) {
        let path = stack
            .iter()
            .map(|f| f.segment.as_str())
            .collect::<Vec<_>>()
            .join("/");
        self.lines.entry(path).or_insert(line);
    }

    /// The line of `path`, or of its closest recorded ancestor, or 1.
    pub(crate) fn line(&self, path: &[&str]) -> usize {
        let mut len = path.len();
        while len > 0 {
            if let Some(&l) = self.lines.get(&path[..len].join("/")) {
                return l;
            }
            len -= 1;
        }
        1
    }
}

/// Splits `key: value` (plain, single- or double-quoted key). Returns None for lines that are
/// not mapping entries (continuations of flow collections, plain text).
fn split_key(s: &str) -> Option<(String, &str)> {
    let (key, after) = if let Some(q) = s.chars().next().filter(|c| *c == '"' || *c == '\'') {
        let end = s[1..].find(q)? + 1;
        (s[1..end].to_string(), &s[end + 1..])
    } else {
        if s.starts_with(['[', '{', '&', '*', '!', '|', '>', '%', '@', '`']) {
            return None;
        }
        let mut idx = None;
        for (i, c) in s.char_indices() {
            if c == ':' {
                let next = s[i + 1..].chars().next();
                if next.is_none() || next == Some(' ') || next == Some('\t') {
                    idx = Some(i);
                    break;
                }
            }
            if c == ' ' && s[i..].starts_with(" #") {
                return None;
            }
        }
        let i = idx?;
        (s[..i].trim_end().to_string(), &s[i..])
    };
    let after = after.trim_start();
    let value = after.strip_prefix(':')?;
    if !(value.is_empty() || value.starts_with([' ', '\t'])) {
        return None;
    }
    Some((key, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# a flow
name: demo
numbers:
  - "800111"
  - '800222'
holidays: ["2026-08-14"]
nodes:
  welcome:
    type: play
    prompts: [hello]
    next: menu
  menu:
    type: menu
    note: |
      text: that looks like a key
      other: too
    choices:
      "1": welcome
      2: end
      '#': end
  end:
    type: hangup
list:
- a: 1
  b: 2
- a: 3
"#;

    #[test]
    fn finds_nested_keys_and_items() {
        let idx = LineIndex::new(TEXT);
        assert_eq!(idx.line(&["name"]), 2);
        assert_eq!(idx.line(&["numbers", "1"]), 5);
        assert_eq!(idx.line(&["nodes", "welcome"]), 8);
        assert_eq!(idx.line(&["nodes", "welcome", "next"]), 11);
        assert_eq!(idx.line(&["nodes", "menu", "choices", "1"]), 18);
        assert_eq!(idx.line(&["nodes", "menu", "choices", "2"]), 19);
        assert_eq!(idx.line(&["nodes", "menu", "choices", "#"]), 20);
        assert_eq!(idx.line(&["nodes", "end", "type"]), 22);
        assert_eq!(idx.line(&["list", "1", "a"]), 26);
        assert_eq!(idx.line(&["list", "0", "b"]), 25);
    }

    #[test]
    fn crlf_line_endings() {
        let idx = LineIndex::new(&TEXT.replace('\n', "\r\n"));
        assert_eq!(idx.line(&["nodes", "menu", "choices", "2"]), 19);
    }

    #[test]
    fn block_scalars_and_unknown_paths_fall_back() {
        let idx = LineIndex::new(TEXT);
        // `text:` inside the block scalar is not a key of `menu`.
        assert_eq!(idx.line(&["nodes", "menu", "text"]), 12);
        assert_eq!(idx.line(&["holidays", "0"]), 6);
        assert_eq!(idx.line(&["nowhere"]), 1);
    }
}
