//! Redaction of credentials in text that may reach a terminal, a log or an error file.
//!
//! Store addresses carry secrets in two places: a SAS token in the query string
//! (`…/container?sv=…&sig=…`) and, rarely, user info (`https://user:password@host/…`). Connection
//! strings carry `AccountKey=` and `SharedAccessSignature=`. Transport errors (reqwest's text
//! names the full request URL) and the CLI's own messages can contain any of them, so every
//! message built from an address or a transport error goes through [`redact`], one function for
//! every path: the store's errors, the CLI's contexts, its top-level error print, the mount's
//! error file. It is deliberately blunt: a whole query string goes, not just `sig`, because a
//! query string has no other business in a message.

/// What replaces a secret.
pub const REDACTED: &str = "REDACTED";

/// Field names whose values are secrets wherever they appear (`name=value`, case-insensitive):
/// a SAS signature, and the secret parts of a connection string.
const SECRET_FIELDS: &[&str] = &["sig=", "accountkey=", "sharedaccesssignature="];

/// `text` with every URL's query string and user info replaced by [`REDACTED`], and the value of
/// every `sig=`, `AccountKey=` or `SharedAccessSignature=` field too.
pub fn redact(text: &str) -> String {
    redact_fields(&redact_urls(text))
}

/// Where a URL that starts at a scheme ends: at white space, a quote or an angle bracket, less
/// trailing punctuation of the sentence around it (`(http://…): x`).
fn url_end(text: &str, from: usize) -> usize {
    let end = text[from..]
        .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '<' | '>' | '`'))
        .map_or(text.len(), |at| from + at);
    from + text[from..end]
        .trim_end_matches([')', ']', ',', '.', ';', ':'])
        .len()
}

fn redact_urls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let (before, from_scheme) = rest.split_at(at + 3);
        out.push_str(before);
        let end = url_end(from_scheme, 0);
        let (url, after) = from_scheme.split_at(end);
        // User info: everything before an `@` that comes before the path.
        let authority_end = url.find(['/', '?', '#']).unwrap_or(url.len());
        let url = match url[..authority_end].rfind('@') {
            Some(at) => {
                out.push_str(REDACTED);
                &url[at..]
            }
            None => url,
        };
        match url.find('?') {
            Some(query) => {
                out.push_str(&url[..=query]);
                out.push_str(REDACTED);
            }
            None => out.push_str(url),
        }
        rest = after;
    }
    out.push_str(rest);
    out
}

fn redact_fields(text: &str) -> String {
    let lower = text.to_ascii_lowercase();
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    let mut search = 0;
    while let Some((at, field)) = SECRET_FIELDS
        .iter()
        .filter_map(|field| lower[search..].find(field).map(|at| (search + at, field)))
        .min_by_key(|(at, _)| *at)
    {
        let value_start = at + field.len();
        let value_end = text[value_start..]
            .find(|c: char| c.is_whitespace() || matches!(c, '&' | ';' | '"' | '\'' | ')' | ','))
            .map_or(text.len(), |end| value_start + end);
        out.push_str(&text[copied..value_start]);
        if value_end > value_start && &text[value_start..value_end] != REDACTED {
            out.push_str(REDACTED);
        } else {
            out.push_str(&text[value_start..value_end]);
        }
        copied = value_end;
        search = value_end.max(value_start);
    }
    out.push_str(&text[copied..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_strings_and_user_info_go() {
        let text = "error sending request for url \
                    (http://127.0.0.1:9/acct/cont/a%20b?comp=list&sv=2019&sig=abc%2Bdef%3D): x";
        let out = redact(text);
        assert_eq!(
            out,
            "error sending request for url (http://127.0.0.1:9/acct/cont/a%20b?REDACTED): x"
        );
        assert_eq!(
            redact("see https://user:pw@host.example/c?x and 'https://a/b?sig=1'"),
            "see https://REDACTED@host.example/c?REDACTED and 'https://a/b?REDACTED'"
        );
        assert_eq!(
            redact("https://a.blob.core.windows.net/c/blob"),
            "https://a.blob.core.windows.net/c/blob"
        );
    }

    #[test]
    fn secret_fields_go_anywhere() {
        assert_eq!(
            redact("DefaultEndpointsProtocol=https;AccountName=a;AccountKey=c2VjcmV0==;x=y"),
            "DefaultEndpointsProtocol=https;AccountName=a;AccountKey=REDACTED;x=y"
        );
        assert_eq!(
            redact("token sv=1&SIG=s3cr3t&se=2 and SharedAccessSignature=sv=1&sig=q"),
            "token sv=1&SIG=REDACTED&se=2 and SharedAccessSignature=REDACTED&sig=REDACTED"
        );
        assert_eq!(redact("no secrets: a=b"), "no secrets: a=b");
        assert_eq!(redact("sig="), "sig=");
        assert_eq!(redact(&redact("x sig=abc")), "x sig=REDACTED");
    }
}
