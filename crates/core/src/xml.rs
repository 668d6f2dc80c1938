//! Well-formedness of XML documents sent to processors.

use quick_xml::Reader;
use quick_xml::events::Event;

/// True for a well-formed document: one root element, matching tags, valid syntax, and only
/// the predefined entities (a processor body has no business declaring its own).
pub fn is_well_formed(text: &str) -> bool {
    let mut reader = Reader::from_str(text);
    reader.config_mut().check_end_names = true;
    let mut depth: usize = 0;
    let mut roots = 0;
    loop {
        match reader.read_event() {
            Ok(Event::Start(e)) => {
                if e.attributes().with_checks(true).any(|a| a.is_err()) {
                    return false;
                }
                if depth == 0 {
                    roots += 1;
                }
                depth += 1;
            }
            Ok(Event::End(_)) => match depth.checked_sub(1) {
                Some(d) => depth = d,
                None => return false,
            },
            Ok(Event::Empty(e)) => {
                if e.attributes().with_checks(true).any(|a| a.is_err()) {
                    return false;
                }
                if depth == 0 {
                    roots += 1;
                }
            }
            Ok(Event::Text(t)) if depth == 0 => {
                if !t.trim().is_empty() {
                    return false;
                }
            }
            Ok(Event::GeneralRef(r)) => {
                let known = match r.resolve_char_ref() {
                    Ok(Some(_)) => true,
                    Ok(None) => matches!(&*r, "amp" | "lt" | "gt" | "quot" | "apos"),
                    Err(_) => false,
                };
                if !known || depth == 0 {
                    return false;
                }
            }
            Ok(Event::Eof) => return depth == 0 && roots == 1,
            Ok(_) => {}
            Err(_) => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::is_well_formed;

    #[test]
    fn accepts_documents_and_refuses_broken_ones() {
        for good in [
            "<a/>",
            "<?xml version=\"1.0\"?>\n<s:Envelope xmlns:s=\"x\"><s:Body><n a=\"1\">4242</n></s:Body></s:Envelope>",
            "<a><![CDATA[<raw>]]><!-- c --></a>\n",
            "<a>&amp;&lt;&#233;</a>",
        ] {
            assert!(is_well_formed(good), "{good}");
        }
        for bad in [
            "",
            "<a>",
            "<a></b>",
            "<a/><b/>",
            "text<a/>",
            "<a>&bogus;</a>",
            "<a x=1/>",
            "</a>",
        ] {
            assert!(!is_well_formed(bad), "{bad}");
        }
    }
}
