//! Derived tables (`metrics.parquet`, `transitions.parquet`, `perplexity.parquet`) written
//! from typed rows through a declared Arrow schema: each table names its columns once, with
//! their type and how a row gives the value, so a column's type never depends on the values
//! of a run (an all-empty column keeps its type, and an empty table keeps its columns).
//!
//! Every column is nullable: integers are Int64, numbers Float64 and text Utf8. A number
//! that is not finite is stored as null (as the report's JSON shows it); a row whose value
//! does not fit its column is an error naming the table, the row and the column, never
//! dropped.

use super::{store_err, write_batch};
use crate::error::Result;
use arrow::array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use std::path::Path;
use std::sync::Arc;

/// How a row gives one column's value.
pub enum Get<R> {
    /// An Int64 column (counts).
    Int(fn(&R) -> Option<u64>),
    /// A Float64 column.
    Float(fn(&R) -> Option<f64>),
    /// A Utf8 column.
    Text(fn(&R) -> Option<&str>),
}

/// One declared column.
pub struct Column<R> {
    /// The column name (an interface: readers rely on it).
    pub name: &'static str,
    /// Its type and the value of a row.
    pub get: Get<R>,
}

/// A derived table: its file name and its columns in order.
pub struct Table<R: 'static> {
    /// The file name, such as `metrics.parquet`, which errors name.
    pub name: &'static str,
    /// The columns, in file order.
    pub columns: &'static [Column<R>],
}

impl<R> Table<R> {
    /// The declared Arrow schema.
    pub fn schema(&self) -> Schema {
        Schema::new(
            self.columns
                .iter()
                .map(|c| {
                    let t = match c.get {
                        Get::Int(_) => DataType::Int64,
                        Get::Float(_) => DataType::Float64,
                        Get::Text(_) => DataType::Utf8,
                    };
                    Field::new(c.name, t, true)
                })
                .collect::<Vec<_>>(),
        )
    }

    /// The rows as one record batch of the declared schema.
    pub fn batch(&self, rows: &[R]) -> Result<RecordBatch> {
        let cols = self
            .columns
            .iter()
            .map(|c| self.column(c, rows))
            .collect::<Result<Vec<ArrayRef>>>()?;
        RecordBatch::try_new(Arc::new(self.schema()), cols)
            .map_err(|e| crate::Error::Store(format!("{}: {e}", self.name)))
    }

    fn column(&self, c: &Column<R>, rows: &[R]) -> Result<ArrayRef> {
        Ok(match c.get {
            Get::Int(get) => {
                let values = rows
                    .iter()
                    .enumerate()
                    .map(|(i, r)| {
                        get(r)
                            .map(|v| {
                                i64::try_from(v).map_err(|_| {
                                    crate::Error::Store(format!(
                                        "{}: row {i}: `{}` = {v} does not fit a 64-bit signed integer",
                                        self.name, c.name
                                    ))
                                })
                            })
                            .transpose()
                    })
                    .collect::<Result<Vec<Option<i64>>>>()?;
                Arc::new(Int64Array::from(values))
            }
            Get::Float(get) => Arc::new(Float64Array::from_iter(
                rows.iter().map(|r| get(r).filter(|v| v.is_finite())),
            )),
            Get::Text(get) => Arc::new(StringArray::from_iter(rows.iter().map(get))),
        })
    }

    /// Write the rows to `path` (through a temporary file), first removing the temporary
    /// files an earlier writer of `path` left when it was stopped ([`super::stale`]).
    pub fn write(&self, path: &Path, rows: &[R]) -> Result<()> {
        super::stale::remove_orphans_of(path);
        let batch = self
            .batch(rows)
            .map_err(|e| store_err(path, format!("cannot write: {e}")))?;
        write_batch(path, &batch, "table-tmp")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct R {
        n: u64,
        x: Option<f64>,
        s: Option<String>,
    }

    const T: Table<R> = Table {
        name: "t.parquet",
        columns: &[
            Column {
                name: "n",
                get: Get::Int(|r| Some(r.n)),
            },
            Column {
                name: "x",
                get: Get::Float(|r| r.x),
            },
            Column {
                name: "s",
                get: Get::Text(|r| r.s.as_deref()),
            },
        ],
    };

    #[test]
    fn an_empty_column_keeps_its_type_and_an_empty_table_its_columns() {
        let b = T
            .batch(&[R {
                n: 1,
                x: None,
                s: None,
            }])
            .expect("batch");
        let types: Vec<DataType> = b
            .schema()
            .fields()
            .iter()
            .map(|f| f.data_type().clone())
            .collect();
        assert_eq!(types, [DataType::Int64, DataType::Float64, DataType::Utf8]);
        assert_eq!(b.column(1).null_count(), 1);
        let empty = T.batch(&[]).expect("empty");
        assert_eq!((empty.num_rows(), empty.num_columns()), (0, 3));
    }

    #[test]
    fn a_value_that_does_not_fit_is_an_error_naming_table_row_and_column() {
        let rows = [
            R {
                n: 1,
                x: Some(f64::NAN),
                s: Some("a".into()),
            },
            R {
                n: u64::MAX,
                x: None,
                s: None,
            },
        ];
        let e = T.batch(&rows).expect_err("overflow").to_string();
        assert!(
            e.contains("t.parquet") && e.contains("row 1") && e.contains("`n`"),
            "{e}"
        );
        // A number that is not finite is null, as in the report's JSON.
        let b = T.batch(&rows[..1]).expect("batch");
        assert_eq!(b.column(1).null_count(), 1);
    }
}
