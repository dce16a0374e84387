//! Errors of the JSON frontend: each points at the file, and where it can, at the exact
//! place in it (line, column and a byte span that the CLI renders with miette).

use std::path::{Path, PathBuf};

use miette::{NamedSource, SourceSpan};

/// What went wrong, for callers that react to the kind rather than the text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// The file could not be read.
    Io,
    /// The file is empty.
    Empty,
    /// Not valid JSON (truncated, stray characters, …).
    Syntax,
    /// Valid JSON that does not follow the graph format (missing or unknown field, bad type).
    Format,
    /// An op name that is not in the IR.
    UnknownOp,
    /// An attribute the op does not have.
    UnknownAttr,
    /// A name that refers to no value, or to one defined further down.
    UnknownValue,
    /// Two nodes or values with one name.
    DuplicateName,
    /// The graph breaks an IR rule (shapes, dtypes, mesh, …).
    Verify,
    /// An external weight file is missing or does not match its declaration.
    ExternalData,
}

/// An error reading a JSON model, with its position when there is one. Boxed, so that
/// results stay small on the happy path; its fields are reached through `Deref`.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
#[error(transparent)]
#[diagnostic(transparent)]
pub struct JsonError(Box<ErrorDetails>);

/// The contents of a [`JsonError`].
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
#[error("{location}: {message}")]
pub struct ErrorDetails {
    pub kind: ErrorKind,
    /// `path:line:column`, or just the path.
    pub location: String,
    pub message: String,
    #[source_code]
    src: Option<NamedSource<String>>,
    #[label("{label}")]
    span: Option<SourceSpan>,
    label: String,
    #[help]
    pub help: Option<String>,
}

impl std::ops::Deref for JsonError {
    type Target = ErrorDetails;
    fn deref(&self) -> &ErrorDetails {
        &self.0
    }
}

impl std::ops::DerefMut for JsonError {
    fn deref_mut(&mut self) -> &mut ErrorDetails {
        &mut self.0
    }
}

impl JsonError {
    /// An error about the file as a whole.
    pub fn file(kind: ErrorKind, path: &Path, message: impl Into<String>) -> JsonError {
        JsonError(Box::new(ErrorDetails {
            kind,
            location: path.display().to_string(),
            message: message.into(),
            src: None,
            span: None,
            label: String::new(),
            help: None,
        }))
    }

    /// An error at byte range `start..end` of `src`.
    pub fn at(
        kind: ErrorKind,
        path: &Path,
        src: &str,
        start: usize,
        end: usize,
        message: impl Into<String>,
    ) -> JsonError {
        let start = floor_char_boundary(src, start.min(src.len()));
        let end = floor_char_boundary(src, end.clamp(start, src.len()));
        let (line, col) = line_col(src, start);
        let message = message.into();
        JsonError(Box::new(ErrorDetails {
            kind,
            location: format!("{}:{line}:{col}", path.display()),
            label: short_label(&message),
            message,
            src: Some(NamedSource::new(path.display().to_string(), src.to_owned())),
            span: Some(SourceSpan::new(start.into(), end - start)),
            help: None,
        }))
    }

    /// Adds a hint on how to fix the problem.
    pub fn with_help(mut self, help: impl Into<String>) -> JsonError {
        self.help = Some(help.into());
        self
    }
}

impl ErrorDetails {
    /// 1-based line and column of the error, when it has a position.
    pub fn line_col(&self) -> Option<(usize, usize)> {
        let mut parts = self.location.rsplitn(3, ':');
        let col = parts.next()?.parse().ok()?;
        let line = parts.next()?.parse().ok()?;
        parts.next()?;
        Some((line, col))
    }
}

fn short_label(message: &str) -> String {
    let first = message.lines().next().unwrap_or_default();
    if first.len() > 80 {
        let cut = floor_char_boundary(first, 77);
        format!("{}...", &first[..cut])
    } else {
        first.to_owned()
    }
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// 1-based line and column (in characters) of byte offset `offset`.
pub fn line_col(src: &str, offset: usize) -> (usize, usize) {
    let before = &src[..floor_char_boundary(src, offset.min(src.len()))];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

/// Byte offset of 1-based `line`, `col` (serde_json counts columns in bytes).
pub fn offset_of(src: &str, line: usize, col: usize) -> usize {
    let mut offset = 0;
    for (i, l) in src.split_inclusive('\n').enumerate() {
        if i + 1 == line {
            return (offset + col.saturating_sub(1)).min(src.len());
        }
        offset += l.len();
    }
    src.len()
}

/// Where the model file lives, for relative external paths.
pub fn base_dir(path: &Path) -> PathBuf {
    path.parent().map(Path::to_path_buf).unwrap_or_default()
}
