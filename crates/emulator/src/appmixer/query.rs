//! The query strings of `GET /files`, `GET /files/count` and `DELETE /files`: decoding,
//! validation (400 with `validation.source = "query"` and the parameter as key, as Joi would
//! reject it) and applying them to a user's files.
//!
//! Syntax (*choices* where the docs give only one example):
//! - `filter=field:value` matches exactly, `filter=field:~text` matches names containing
//!   `text`, ignoring ASCII case. Fields: `filename`, `contentType`, `fileId`, `md5` and `length`
//!   (exact only). `filter` may repeat; every one must hold. No comma splitting, so a value may
//!   hold commas.
//! - `sort=field:1` ascending, `field:-1` descending, several separated by commas; fields
//!   `filename`, `contentType`, `fileId`, `md5`, `length`, `uploadDate`. Ties, and the default
//!   order, go by creation (oldest first).
//! - `offset` skips, `limit` takes (0 or absent: no limit, as MongoDB).
//! - `projection=a,b` keeps only those keys, `projection=-a,-b` drops them (space-separated
//!   works too; mixing both is 400, as in MongoDB); keys are the File object's top-level keys.
//! - `includeComponentSourceFiles` must be `true` or `false`; the emulator has no component
//!   source files, so it changes nothing.
//! - Any other parameter, or a repeated one other than `filter`, is 400.

use std::cmp::Ordering;

use axum::response::Response;

use super::files::FileRecord;
use super::reply;

/// A File object key a query may name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Field {
    Length,
    ChunkSize,
    UploadDate,
    Filename,
    Md5,
    Metadata,
    ContentType,
    FileId,
}

impl Field {
    /// Every key, in the order the File object has them.
    pub(super) const ALL: [Field; 8] = [
        Field::Length,
        Field::ChunkSize,
        Field::UploadDate,
        Field::Filename,
        Field::Md5,
        Field::Metadata,
        Field::ContentType,
        Field::FileId,
    ];

    fn name(self) -> &'static str {
        match self {
            Field::Length => "length",
            Field::ChunkSize => "chunkSize",
            Field::UploadDate => "uploadDate",
            Field::Filename => "filename",
            Field::Md5 => "md5",
            Field::Metadata => "metadata",
            Field::ContentType => "contentType",
            Field::FileId => "fileId",
        }
    }

    fn parse(name: &str) -> Option<Field> {
        Field::ALL.into_iter().find(|f| f.name() == name)
    }

    /// Whether the field is compared as text (see [`Field::text`]).
    fn text_filterable(self) -> bool {
        matches!(
            self,
            Field::Filename | Field::Md5 | Field::ContentType | Field::FileId
        )
    }

    /// The field's text, for the fields compared as text.
    fn text(self, record: &FileRecord) -> Option<&str> {
        match self {
            Field::Filename => Some(&record.filename),
            Field::Md5 => Some(&record.md5),
            Field::ContentType => Some(&record.content_type),
            Field::FileId => Some(&record.file_id),
            _ => None,
        }
    }
}

/// One `filter` condition.
#[derive(Debug)]
enum Filter {
    Equals(Field, String),
    Contains(Field, String),
    LengthIs(u64),
}

impl Filter {
    fn matches(&self, record: &FileRecord) -> bool {
        match self {
            Filter::Equals(field, value) => field.text(record) == Some(value.as_str()),
            Filter::Contains(field, text) => field
                .text(record)
                .is_some_and(|t| t.to_ascii_lowercase().contains(text)),
            Filter::LengthIs(length) => record.length() == *length,
        }
    }
}

/// Which keys of the File object an answer shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Projection([bool; 8]);

impl Projection {
    /// Every key.
    pub(super) const ALL: Projection = Projection([true; 8]);

    /// Whether `field` is shown.
    pub(super) fn shows(self, field: Field) -> bool {
        self.0[field as usize]
    }
}

/// A decoded query: filters, order, page and projection.
#[derive(Debug)]
pub(super) struct FileQuery {
    filters: Vec<Filter>,
    sort: Vec<(Field, bool)>,
    offset: usize,
    limit: Option<usize>,
    /// Which keys each listed file shows.
    pub(super) projection: Projection,
}

/// The parameters `GET /files` accepts.
pub(super) const LIST_PARAMS: &[&str] = &[
    "limit",
    "offset",
    "sort",
    "projection",
    "filter",
    "includeComponentSourceFiles",
];
/// The parameters `GET /files/count` accepts.
pub(super) const COUNT_PARAMS: &[&str] = &["filter", "includeComponentSourceFiles"];
/// The parameters `DELETE /files` accepts.
pub(super) const DELETE_PARAMS: &[&str] = &["filter"];

fn invalid(key: &str, message: &str) -> Box<Response> {
    Box::new(reply::invalid("query", key, message))
}

/// Decodes `pairs` (in order, repeats kept), accepting only the parameters in `allowed`.
pub(super) fn decode(
    pairs: &[(String, String)],
    allowed: &[&str],
) -> Result<FileQuery, Box<Response>> {
    let mut query = FileQuery {
        filters: Vec::new(),
        sort: Vec::new(),
        offset: 0,
        limit: None,
        projection: Projection::ALL,
    };
    let mut seen: Vec<&str> = Vec::new();
    for (key, value) in pairs {
        if !allowed.contains(&key.as_str()) {
            return Err(invalid(key, &format!("\"{key}\" is not allowed")));
        }
        if key != "filter" && seen.contains(&key.as_str()) {
            return Err(invalid(key, &format!("\"{key}\" must be a single value")));
        }
        seen.push(key);
        match key.as_str() {
            "filter" => query.filters.push(filter(value)?),
            "sort" => query.sort = sort(value)?,
            "projection" => query.projection = projection(value)?,
            "offset" => query.offset = number(key, value)?,
            "limit" => query.limit = Some(number(key, value)?).filter(|&n| n > 0),
            _ => {
                if value != "true" && value != "false" {
                    return Err(invalid(key, &format!("\"{key}\" must be a boolean")));
                }
            }
        }
    }
    Ok(query)
}

fn number(key: &str, value: &str) -> Result<usize, Box<Response>> {
    value
        .parse::<usize>()
        .map_err(|_| invalid(key, &format!("\"{key}\" must be a non-negative integer")))
}

fn filter(value: &str) -> Result<Filter, Box<Response>> {
    let bad = |why: &str| invalid("filter", &format!("\"filter\" {why}"));
    let Some((name, wanted)) = value.split_once(':') else {
        return Err(bad("must be field:value or field:~text"));
    };
    let Some(field) = Field::parse(name) else {
        return Err(bad(&format!("cannot filter by {name:?}")));
    };
    match (field, wanted.strip_prefix('~')) {
        (Field::Length, None) => wanted
            .parse()
            .map(Filter::LengthIs)
            .map_err(|_| bad("length must be a non-negative integer")),
        (Field::Length, Some(_)) => Err(bad("length can only match exactly")),
        (field, Some(text)) if field.text_filterable() => {
            Ok(Filter::Contains(field, text.to_ascii_lowercase()))
        }
        (field, None) if field.text_filterable() => Ok(Filter::Equals(field, wanted.to_owned())),
        _ => Err(bad(&format!("cannot filter by {name:?}"))),
    }
}

fn sort(value: &str) -> Result<Vec<(Field, bool)>, Box<Response>> {
    let bad = |why: &str| invalid("sort", &format!("\"sort\" {why}"));
    let mut out = Vec::new();
    for item in value.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let (name, direction) = item.split_once(':').unwrap_or((item, "1"));
        let field = Field::parse(name)
            .filter(|f| !matches!(f, Field::ChunkSize | Field::Metadata))
            .ok_or_else(|| bad(&format!("cannot sort by {name:?}")))?;
        let descending = match direction {
            "1" => false,
            "-1" => true,
            _ => return Err(bad("direction must be 1 or -1")),
        };
        out.push((field, descending));
    }
    Ok(out)
}

fn projection(value: &str) -> Result<Projection, Box<Response>> {
    let bad = |why: &str| invalid("projection", &format!("\"projection\" {why}"));
    let items: Vec<&str> = value
        .split([',', ' '])
        .map(str::trim)
        .filter(|i| !i.is_empty())
        .collect();
    if items.is_empty() {
        return Ok(Projection::ALL);
    }
    let excluding = items[0].starts_with('-');
    let mut shown = [excluding; 8];
    for item in items {
        if item.starts_with('-') != excluding {
            return Err(bad("cannot mix included and excluded fields"));
        }
        let name = item.trim_start_matches('-');
        let field = Field::parse(name).ok_or_else(|| bad(&format!("has no field {name:?}")))?;
        shown[field as usize] = !excluding;
    }
    Ok(Projection(shown))
}

impl FileQuery {
    /// Whether `record` passes every filter.
    pub(super) fn matches(&self, record: &FileRecord) -> bool {
        self.filters.iter().all(|f| f.matches(record))
    }

    /// Sorts `records` and cuts the page out of them.
    pub(super) fn page<'a>(&self, mut records: Vec<&'a FileRecord>) -> Vec<&'a FileRecord> {
        records.sort_by(|a, b| {
            self.sort
                .iter()
                .map(|&(field, descending)| {
                    let order = compare(field, a, b);
                    if descending { order.reverse() } else { order }
                })
                .find(|o| o.is_ne())
                .unwrap_or(Ordering::Equal)
                .then(a.seq.cmp(&b.seq))
        });
        let rest = records.into_iter().skip(self.offset);
        match self.limit {
            Some(limit) => rest.take(limit).collect(),
            None => rest.collect(),
        }
    }
}

fn compare(field: Field, a: &FileRecord, b: &FileRecord) -> Ordering {
    match field {
        Field::Length => a.length().cmp(&b.length()),
        Field::UploadDate => a.upload_date_ms.cmp(&b.upload_date_ms),
        _ => field.text(a).cmp(&field.text(b)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn decodes_the_documented_example() {
        let query = decode(
            &pairs(&[
                ("limit", "10"),
                ("filter", "filename:~Invoice"),
                ("sort", "filename:1"),
            ]),
            LIST_PARAMS,
        )
        .unwrap();
        assert_eq!(query.limit, Some(10));
        assert!(
            matches!(&query.filters[..], [Filter::Contains(Field::Filename, t)] if t == "invoice")
        );
        assert_eq!(query.sort, vec![(Field::Filename, false)]);
    }

    #[test]
    fn rejects_what_joi_would() {
        for bad in [
            ("limit", "-1"),
            ("offset", "x"),
            ("sort", "filename:2"),
            ("sort", "metadata:1"),
            ("filter", "nocolon"),
            ("filter", "length:~1"),
            ("filter", "owner:x"),
            ("projection", "filename,-md5"),
            ("projection", "bogus"),
            ("includeComponentSourceFiles", "yes"),
            ("other", "1"),
        ] {
            assert!(decode(&pairs(&[bad]), LIST_PARAMS).is_err(), "{bad:?}");
        }
        assert!(decode(&pairs(&[("limit", "1"), ("limit", "2")]), LIST_PARAMS).is_err());
        assert!(decode(&pairs(&[("limit", "1")]), COUNT_PARAMS).is_err());
    }

    #[test]
    fn projections_include_or_exclude() {
        let only = projection("filename,fileId").unwrap();
        assert!(only.shows(Field::Filename) && only.shows(Field::FileId));
        assert!(!only.shows(Field::Length));
        let without = projection("-md5 -metadata").unwrap();
        assert!(!without.shows(Field::Md5) && !without.shows(Field::Metadata));
        assert!(without.shows(Field::Length));
        assert_eq!(projection("").unwrap(), Projection::ALL);
    }
}
