//! A small XML element tree (quick-xml underneath), enough for the lifecycle configuration
//! documents the mover evaluates. Namespaces are dropped; depth and element count are
//! bounded, so a hostile document cannot make the tree large.

use quick_xml::events::Event;
use quick_xml::Reader;

/// Elements nested deeper than this are refused.
const DEPTH_MAX: usize = 16;
/// Documents with more elements than this are refused.
const NODES_MAX: usize = 100_000;

/// One element: its local name, its text and its child elements in order.
#[derive(Debug, Default)]
pub struct Node {
    pub name: String,
    pub text: String,
    pub children: Vec<Node>,
}

impl Node {
    pub fn child(&self, name: &str) -> Option<&Node> {
        self.children.iter().find(|c| c.name == name)
    }

    pub fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Node> + 'a {
        self.children.iter().filter(move |c| c.name == name)
    }

    pub fn text_of(&self, name: &str) -> Option<&str> {
        self.child(name).map(|c| c.text.as_str())
    }
}

/// The document's root element; None when it is not well-formed XML or too large.
pub fn parse(body: &[u8]) -> Option<Node> {
    let mut reader = Reader::from_reader(body);
    reader.config_mut().trim_text(true);
    let mut stack: Vec<Node> = Vec::new();
    let mut root = None;
    let mut nodes = 0usize;
    let mut buf = Vec::new();
    loop {
        match reader.read_event_into(&mut buf).ok()? {
            Event::Start(e) => {
                nodes += 1;
                if stack.len() >= DEPTH_MAX || nodes > NODES_MAX || root.is_some() {
                    return None;
                }
                stack.push(Node {
                    name: String::from_utf8_lossy(e.local_name().as_ref()).into_owned(),
                    ..Node::default()
                });
            }
            Event::Empty(e) => {
                nodes += 1;
                let node =
                    Node { name: String::from_utf8_lossy(e.local_name().as_ref()).into_owned(), ..Node::default() };
                match stack.last_mut() {
                    Some(parent) => parent.children.push(node),
                    None if root.is_none() => root = Some(node),
                    None => return None,
                }
            }
            Event::Text(t) => stack.last_mut()?.text.push_str(&t.unescape().ok()?),
            Event::CData(t) => stack.last_mut()?.text.push_str(&String::from_utf8_lossy(&t)),
            Event::End(_) => {
                let node = stack.pop()?;
                match stack.last_mut() {
                    Some(parent) => parent.children.push(node),
                    None => root = Some(node),
                }
            }
            Event::Eof => break,
            _ => {}
        }
        buf.clear();
    }
    root.filter(|_| stack.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_parse_and_garbage_does_not() {
        let doc = br#"<?xml version="1.0"?><L xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
            <Rule><ID>a&amp;b</ID></Rule><Rule><ID>c</ID><Filter/></Rule></L>"#;
        let root = parse(doc).unwrap();
        assert_eq!(root.name, "L");
        let rules: Vec<_> = root.all("Rule").collect();
        assert_eq!((rules.len(), rules[0].text_of("ID")), (2, Some("a&b")));
        assert!(rules[1].child("Filter").is_some());
        for bad in [&b"<a><b></a>"[..], b"<a>", b"", b"<a></a><b></b>", b"text"] {
            assert!(parse(bad).is_none(), "{:?}", String::from_utf8_lossy(bad));
        }
        let deep = format!("{}{}", "<a>".repeat(DEPTH_MAX + 1), "</a>".repeat(DEPTH_MAX + 1));
        assert!(parse(deep.as_bytes()).is_none());
    }
}
