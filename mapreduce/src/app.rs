//! Apps: the map and reduce functions a job runs.
//!
//! An app is a value implementing [`App`], found by name in [`APPS`]. Its functions must be
//! deterministic — a map's output depends only on its input, a reduce's only on its key and
//! values in the order given — because a task may run twice (re-issued, backed up, or a
//! stalled worker waking late) and each run's committed output replaces the other's whole.
//!
//! Adding an app: implement [`App`] for a unit struct and add it to [`APPS`]; coordinator
//! and workers then accept its name in `--app`.

/// A map function's sink: `emit(key, value)`.
pub type Emit<'a> = dyn FnMut(&str, &str) + 'a;

/// A MapReduce application.
pub trait App: Sync {
    /// The name `--app` selects it by.
    fn name(&self) -> &'static str;

    /// One line for `--help` and errors.
    fn about(&self) -> &'static str;

    /// Called once per input document piece (a file's part in one split, or a store value);
    /// `document` names it (the file's path as listed), `contents` is its text.
    fn map(&self, document: &str, contents: &str, emit: &mut Emit<'_>);

    /// The value for `key` given every value emitted for it, in input order.
    fn reduce(&self, key: &str, values: &[&str]) -> String;

    /// True if `reduce` may also run on some of a key's values and its result stand in for
    /// them (a combiner, as for a sum): map tasks then shrink their output before writing it.
    fn combines(&self) -> bool {
        false
    }
}

/// Every app, by name.
pub const APPS: &[&dyn App] = &[&WordCount, &InvertedIndex, &Distinct];

/// The app called `name`.
pub fn find(name: &str) -> Option<&'static dyn App> {
    APPS.iter().copied().find(|app| app.name() == name)
}

/// The names of every app, comma-separated (for messages).
pub fn names() -> String {
    APPS.iter().map(|a| a.name()).collect::<Vec<_>>().join(", ")
}

/// Calls `visit` with each word of `text`: a maximal run of letters (Unicode `Alphabetic`:
/// the letter categories, plus letter-like numbers such as Ⅻ and some combining marks).
pub fn words<'t>(text: &'t str, mut visit: impl FnMut(&'t str)) {
    let mut start = None;
    for (at, c) in text.char_indices() {
        match (c.is_alphabetic(), start) {
            (true, None) => start = Some(at),
            (false, Some(from)) => {
                visit(&text[from..at]);
                start = None;
            }
            _ => {}
        }
    }
    if let Some(from) = start {
        visit(&text[from..]);
    }
}

/// Word count (the lab's Part I): each word and how often it occurs.
pub struct WordCount;

impl App for WordCount {
    fn name(&self) -> &'static str {
        "wordcount"
    }
    fn about(&self) -> &'static str {
        "each word (a maximal run of letters) and its number of occurrences"
    }
    fn map(&self, _document: &str, contents: &str, emit: &mut Emit<'_>) {
        words(contents, |word| emit(word, "1"));
    }
    fn reduce(&self, _key: &str, values: &[&str]) -> String {
        let total: u64 = values
            .iter()
            .map(|v| v.parse::<u64>().expect("word count values are counts"))
            .sum();
        total.to_string()
    }
    fn combines(&self) -> bool {
        true
    }
}

/// Inverted index: each word and the documents holding it, as `N doc1,doc2` (sorted).
pub struct InvertedIndex;

impl App for InvertedIndex {
    fn name(&self) -> &'static str {
        "invertedindex"
    }
    fn about(&self) -> &'static str {
        "each word and the sorted documents that hold it, as `N doc1,doc2`"
    }
    fn map(&self, document: &str, contents: &str, emit: &mut Emit<'_>) {
        let mut seen = std::collections::HashSet::new();
        words(contents, |word| {
            if seen.insert(word) {
                emit(word, document);
            }
        });
    }
    fn reduce(&self, _key: &str, values: &[&str]) -> String {
        let documents: std::collections::BTreeSet<&str> = values.iter().copied().collect();
        let list: Vec<&str> = documents.into_iter().collect();
        format!("{} {}", list.len(), list.join(","))
    }
}

/// The lab's test job: every whitespace-separated word once, with an empty value.
pub struct Distinct;

impl App for Distinct {
    fn name(&self) -> &'static str {
        "distinct"
    }
    fn about(&self) -> &'static str {
        "the lab's test job: every whitespace-separated word once, with an empty value"
    }
    fn map(&self, _document: &str, contents: &str, emit: &mut Emit<'_>) {
        for word in contents.split_whitespace() {
            emit(word, "");
        }
    }
    fn reduce(&self, _key: &str, _values: &[&str]) -> String {
        String::new()
    }
    fn combines(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_words(text: &str) -> Vec<&str> {
        let mut out = Vec::new();
        words(text, |w| out.push(w));
        out
    }

    #[test]
    fn a_word_is_a_maximal_run_of_letters() {
        assert_eq!(
            all_words("Hello, world! it's 42x café—naïve 東京\n"),
            ["Hello", "world", "it", "s", "x", "café", "naïve", "東京"]
        );
        assert_eq!(all_words(""), Vec::<&str>::new());
        assert_eq!(all_words("end"), ["end"]);
    }

    #[test]
    fn every_app_is_found_by_its_name() {
        for app in APPS {
            assert_eq!(find(app.name()).map(|a| a.name()), Some(app.name()));
        }
        assert!(find("nope").is_none());
    }

    #[test]
    fn inverted_index_lists_each_document_once_sorted() {
        let values = ["b.txt", "a.txt", "b.txt"];
        assert_eq!(InvertedIndex.reduce("w", &values), "2 a.txt,b.txt");
    }
}
