//! A YAML document as a tree that keeps what the importer needs and `yaml_rust2::Yaml` drops:
//! each scalar's text as written (an unquoted `0x00…01` address is text, not the integer
//! 1) and the line of every node, for messages that point into the file.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, ScanError, TScalarStyle};

/// A node and the line (1-based) it starts on.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Node {
    pub(crate) value: Value,
    pub(crate) line: usize,
}

/// What a node holds. Mapping keys are nodes too (a key that is not a scalar is refused by the
/// reader, with its line).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    /// `~`, `null`, or nothing at all.
    Null,
    /// A scalar's text, quoted or not; typed by the reader (as Go's weakly typed decoder does).
    Scalar(String),
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

impl Node {
    /// What the node is, for "expected a string, found a mapping".
    pub(crate) fn kind(&self) -> &'static str {
        match self.value {
            Value::Null => "null",
            Value::Scalar(_) => "a scalar",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }
}

/// Why the text is not a single YAML document.
#[derive(Debug, thiserror::Error)]
pub(crate) enum YamlError {
    /// Not YAML.
    #[error("line {line} column {column}: {message}")]
    Syntax {
        line: usize,
        column: usize,
        message: String,
    },
    /// Several documents (`---`): which one the executor reads is not worth guessing.
    #[error("line {line}: a second YAML document; give the executor's config alone")]
    SecondDocument { line: usize },
    /// Nothing in it.
    #[error("no YAML document in it (the file is empty)")]
    Empty,
}

impl From<ScanError> for YamlError {
    fn from(e: ScanError) -> Self {
        YamlError::Syntax {
            line: e.marker().line(),
            column: e.marker().col() + 1,
            message: e.info().to_owned(),
        }
    }
}

/// Parses `text`, which must hold one YAML document.
pub(crate) fn parse(text: &str) -> Result<Node, YamlError> {
    let mut builder = Builder::default();
    Parser::new_from_str(text).load(&mut builder, true)?;
    if let Some(e) = builder.error {
        return Err(e);
    }
    builder.document.ok_or(YamlError::Empty)
}

/// Builds the tree from the parser's events.
#[derive(Default)]
struct Builder {
    /// Open sequences and mappings: the node being filled, its anchor id (0: none), and for a
    /// mapping the key waiting for its value.
    open: Vec<(Node, usize, Option<Node>)>,
    anchors: HashMap<usize, Node>,
    document: Option<Node>,
    error: Option<YamlError>,
}

impl Builder {
    /// Puts a finished node into its parent (or makes it the document).
    fn finish(&mut self, node: Node, anchor: usize) {
        if anchor > 0 {
            self.anchors.insert(anchor, node.clone());
        }
        let Some((parent, _, pending_key)) = self.open.last_mut() else {
            if self.document.is_some() {
                self.error
                    .get_or_insert(YamlError::SecondDocument { line: node.line });
            } else {
                self.document = Some(node);
            }
            return;
        };
        match &mut parent.value {
            Value::Seq(items) => items.push(node),
            Value::Map(entries) => match pending_key.take() {
                None => *pending_key = Some(node),
                Some(key) => entries.push((key, node)),
            },
            Value::Null | Value::Scalar(_) => unreachable!("only collections are left open"),
        }
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, event: Event, mark: Marker) {
        let line = mark.line();
        match event {
            Event::Scalar(text, style, anchor, _tag) => {
                let null = style == TScalarStyle::Plain
                    && matches!(text.as_str(), "" | "~" | "null" | "Null" | "NULL");
                let value = if null {
                    Value::Null
                } else {
                    Value::Scalar(text)
                };
                self.finish(Node { value, line }, anchor);
            }
            Event::SequenceStart(anchor, _) => self.open.push((
                Node {
                    value: Value::Seq(Vec::new()),
                    line,
                },
                anchor,
                None,
            )),
            Event::MappingStart(anchor, _) => self.open.push((
                Node {
                    value: Value::Map(Vec::new()),
                    line,
                },
                anchor,
                None,
            )),
            Event::SequenceEnd | Event::MappingEnd => {
                if let Some((node, anchor, _)) = self.open.pop() {
                    self.finish(node, anchor);
                }
            }
            Event::Alias(id) => match self.anchors.get(&id).cloned() {
                Some(node) => self.finish(Node { line, ..node }, 0),
                None => {
                    self.error.get_or_insert(YamlError::Syntax {
                        line,
                        column: mark.col() + 1,
                        message: "an alias to an unknown anchor".into(),
                    });
                }
            },
            Event::Nothing
            | Event::StreamStart
            | Event::StreamEnd
            | Event::DocumentStart
            | Event::DocumentEnd => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scalar(text: &str, line: usize) -> Node {
        Node {
            value: Value::Scalar(text.into()),
            line,
        }
    }

    #[test]
    fn scalars_keep_their_text_and_nodes_their_line() {
        let doc = parse(
            "# comment\na: 0x0000000000000000000000000000000000000001\nb:\n  - '007'\n  - ~\n",
        )
        .unwrap();
        let Value::Map(entries) = &doc.value else {
            panic!("{doc:?}")
        };
        assert_eq!(entries[0].0, scalar("a", 2));
        assert_eq!(
            entries[0].1,
            scalar("0x0000000000000000000000000000000000000001", 2)
        );
        let Value::Seq(items) = &entries[1].1.value else {
            panic!("{doc:?}")
        };
        assert_eq!(items[0], scalar("007", 4));
        assert_eq!(items[1].value, Value::Null);
    }

    #[test]
    fn aliases_are_copies_of_their_anchor() {
        let doc = parse("a: &img\n  tag: v1\nb: *img\n").unwrap();
        let Value::Map(entries) = &doc.value else {
            panic!("{doc:?}")
        };
        assert_eq!(entries[0].1.value, entries[1].1.value);
    }

    #[test]
    fn syntax_errors_name_the_line() {
        let e = parse("a: 1\nb: [1, 2\nc: 3\n").unwrap_err().to_string();
        assert!(e.starts_with("line 3 column"), "{e}");
        let e = parse("a:\n  b: 1\n c: 2\n").unwrap_err().to_string();
        assert!(e.starts_with("line 3 column"), "{e}");
        let e = parse("a: 1\n---\nb: 2\n").unwrap_err().to_string();
        assert!(e.starts_with("line 3: a second YAML document"), "{e}");
        assert!(matches!(parse("# nothing\n"), Err(YamlError::Empty)));
    }
}
