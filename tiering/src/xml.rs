//! A small XML element tree (quick-xml underneath), enough for the lifecycle configuration
//! documents the mover evaluates and the request documents the S3 front reads (one parser,
//! so one set of limits). Namespaces are dropped; depth and element count are
//! bounded, so a hostile document cannot make the tree large.

use quick_xml::events::Event;
use quick_xml::Reader;

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

/// Elements may nest this deep at most.
pub const XML_DEPTH_MAX: usize = 16;
/// A document may hold at most this many nodes: every element (empty ones too), text,
/// CDATA section, comment, processing instruction and declaration counts, so no kind of node
/// escapes the limit. (CompleteMultipartUpload's 10,000 parts take 50,000.)
pub const XML_NODES_MAX: usize = 100_000;

/// The document's root element (namespaces dropped); None when it is not well-formed XML,
/// nests too deep or holds too many nodes.
pub fn parse(body: &[u8]) -> Option<Node> {
    let mut reader = Reader::from_reader(body);
    reader.config_mut().trim_text(true);
    let mut stack: Vec<Node> = Vec::new();
    let mut root = None;
    let mut nodes = 0usize;
    let mut buf = Vec::new();
    loop {
        let event = reader.read_event_into(&mut buf).ok()?;
        match event {
            Event::Eof => break,
            // An end tag closes a node already counted.
            Event::End(_) => {}
            _ => nodes += 1,
        }
        if nodes > XML_NODES_MAX {
            return None;
        }
        match event {
            // Too deep, or a second root element.
            Event::Start(_) | Event::Empty(_) if stack.len() >= XML_DEPTH_MAX || root.is_some() => return None,
            Event::Start(e) => stack.push(Node { name: local_name(&e), ..Default::default() }),
            Event::Empty(e) => {
                let node = Node { name: local_name(&e), ..Default::default() };
                match stack.last_mut() {
                    Some(parent) => parent.children.push(node),
                    None => root = Some(node),
                }
            }
            Event::Text(t) => {
                let text = t.unescape().ok()?;
                let node = stack.last_mut()?;
                node.text.push_str(&text);
            }
            Event::CData(t) => {
                let node = stack.last_mut()?;
                node.text.push_str(&String::from_utf8_lossy(&t));
            }
            Event::End(_) => {
                let node = stack.pop()?;
                match stack.last_mut() {
                    Some(parent) => parent.children.push(node),
                    None => root = Some(node),
                }
            }
            _ => {}
        }
        buf.clear();
    }
    root.filter(|_| stack.is_empty())
}

fn local_name(e: &quick_xml::events::BytesStart) -> String {
    String::from_utf8_lossy(e.local_name().as_ref()).into_owned()
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
        let deep = format!("{}{}", "<a>".repeat(XML_DEPTH_MAX + 1), "</a>".repeat(XML_DEPTH_MAX + 1));
        assert!(parse(deep.as_bytes()).is_none());
    }
}
