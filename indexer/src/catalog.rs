//! Resolves the index config against the Postgres catalog: tables exist, configured columns
//! exist with usable types, the primary key is known. The result, `ResolvedIndex`, fixes the
//! column order of every row the indexer handles (`RawRow` values align with `columns`).

use tokio_postgres::Client;

pub use engine::schema::{
    FilterSpec, GeoSpec, Metric, ResolvedIndex, TextSpec, VectorSpec, VectorType,
};

use crate::config::{Config, GeoColumns, IndexConfig};
use crate::error::{Error, Result};

/// `"schema"."table"`, quoted for SQL.
pub fn qualified_table(ix: &ResolvedIndex) -> String {
    format!("{}.{}", quote_ident(&ix.schema), quote_ident(&ix.table))
}

/// The configured columns, quoted and comma-separated, for SELECT and COPY.
pub fn column_list(ix: &ResolvedIndex) -> String {
    ix.columns
        .iter()
        .map(|c| quote_ident(c))
        .collect::<Vec<_>>()
        .join(", ")
}

pub fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

pub fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

struct CatalogColumn {
    name: String,
    type_name: String,
    /// `format_type` output, for messages.
    display_type: String,
}

/// Checks every configured index against the catalog.
pub async fn resolve(client: &Client, config: &Config) -> Result<Vec<ResolvedIndex>> {
    let mut out = Vec::with_capacity(config.indexes.len());
    for (ordinal, ix) in config.indexes.iter().enumerate() {
        out.push(resolve_one(client, ordinal, ix).await?);
    }
    Ok(out)
}

async fn resolve_one(client: &Client, ordinal: usize, ix: &IndexConfig) -> Result<ResolvedIndex> {
    let at = format!("index {:?}", ix.name);
    let rel = client
        .query_opt(
            "SELECT n.nspname::text, c.relname::text, c.oid, c.relkind::text, c.relreplident::text \
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.oid = to_regclass($1)",
            &[&ix.table],
        )
        .await?
        .ok_or_else(|| Error::Config(format!("{at}: table {:?} does not exist", ix.table)))?;
    let schema: String = rel.get(0);
    let table: String = rel.get(1);
    let oid: u32 = rel.get(2);
    let relkind: String = rel.get(3);
    let replident: String = rel.get(4);
    if relkind != "r" && relkind != "p" {
        return Err(Error::Config(format!(
            "{at}: {:?} is not a table (relkind {relkind}); only tables can be replicated",
            ix.table
        )));
    }
    let catalog: Vec<CatalogColumn> = client
        .query(
            "SELECT a.attname::text, t.typname::text, format_type(a.atttypid, a.atttypmod) \
             FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid \
             WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
            &[&oid],
        )
        .await?
        .into_iter()
        .map(|r| CatalogColumn {
            name: r.get(0),
            type_name: r.get(1),
            display_type: r.get(2),
        })
        .collect();
    let find = |col: &str, role: &str| -> Result<&CatalogColumn> {
        catalog.iter().find(|c| c.name == col).ok_or_else(|| {
            let have: Vec<&str> = catalog.iter().map(|c| c.name.as_str()).collect();
            Error::Config(format!(
                "{at}: {role} column {col:?} not found in {schema}.{table} (columns: {})",
                have.join(", ")
            ))
        })
    };

    let pk_names: Vec<String> = match &ix.primary_key {
        Some(pk) => pk.clone(),
        None => {
            let rows = client
                .query(
                    "SELECT a.attname::text FROM pg_index i \
                     JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) \
                     WHERE i.indrelid = $1 AND i.indisprimary \
                     ORDER BY array_position(i.indkey::int2[], a.attnum)",
                    &[&oid],
                )
                .await?;
            if rows.is_empty() {
                return Err(Error::Config(format!(
                    "{at}: {schema}.{table} has no primary key; declare one or set index.primary_key"
                )));
            }
            rows.iter().map(|r| r.get(0)).collect()
        }
    };
    if replident == "n" {
        return Err(Error::Config(format!(
            "{at}: {schema}.{table} has REPLICA IDENTITY NOTHING; updates and deletes could not be replicated"
        )));
    }
    if ix.primary_key.is_some() && replident != "f" {
        // A declared key that is not the table's primary key only reaches us on DELETE when the
        // replica identity carries it.
        tracing::warn!(index = %ix.name, "primary_key declared in config: make sure the table's replica identity includes it (REPLICA IDENTITY FULL or USING INDEX)");
    }

    let mut columns: Vec<String> = Vec::new();
    let mut position = |name: &str| -> usize {
        if let Some(p) = columns.iter().position(|c| c == name) {
            p
        } else {
            columns.push(name.to_owned());
            columns.len() - 1
        }
    };

    let mut pk = Vec::new();
    for name in &pk_names {
        find(name, "primary key")?;
        pk.push(position(name));
    }
    find(&ix.region, "region")?;
    let region = position(&ix.region);

    let mut text = Vec::new();
    for t in &ix.text_fields {
        let c = find(t.column(), "text")?;
        if !matches!(
            c.type_name.as_str(),
            "text" | "varchar" | "bpchar" | "name" | "citext"
        ) {
            return Err(Error::Config(format!(
                "{at}: text column {:?} has type {}; text fields must be text, varchar or char",
                c.name, c.display_type
            )));
        }
        let (boost, language) = match t {
            crate::config::TextField::Column(_) => (1.0, None),
            crate::config::TextField::Detailed(d) => (d.boost, d.language.clone()),
        };
        text.push(TextSpec {
            column: position(t.column()),
            boost,
            language,
        });
    }

    let geo = match &ix.geo {
        None => None,
        Some(g) => Some(match g.columns()? {
            GeoColumns::LatLon { lat, lon } => {
                for (name, role) in [(&lat, "geo lat"), (&lon, "geo lon")] {
                    let c = find(name, role)?;
                    if !matches!(
                        c.type_name.as_str(),
                        "float4" | "float8" | "numeric" | "int2" | "int4" | "int8"
                    ) {
                        return Err(Error::Config(format!(
                            "{at}: {role} column {:?} has type {}; it must be numeric",
                            c.name, c.display_type
                        )));
                    }
                }
                GeoSpec::LatLon {
                    lat: position(&lat),
                    lon: position(&lon),
                }
            }
            GeoColumns::Point(p) => {
                let c = find(&p, "geo point")?;
                if c.type_name != "point" {
                    return Err(Error::Config(format!(
                        "{at}: geo point column {:?} has type {}; it must be point",
                        c.name, c.display_type
                    )));
                }
                GeoSpec::Point(position(&p))
            }
        }),
    };

    let vector = match &ix.vector {
        None => None,
        Some(v) => {
            let c = find(&v.column, "vector")?;
            if !matches!(c.type_name.as_str(), "_float4" | "_float8" | "vector") {
                return Err(Error::Config(format!(
                    "{at}: vector column {:?} has type {}; it must be real[], double precision[] or pgvector's vector",
                    c.name, c.display_type
                )));
            }
            Some(VectorSpec {
                column: position(&v.column),
                dimension: v.dimension,
                metric: v.metric,
                sql_type: match c.type_name.as_str() {
                    "_float4" => VectorType::Real,
                    "_float8" => VectorType::Double,
                    _ => VectorType::Pgvector,
                },
            })
        }
    };

    let mut filters = Vec::new();
    for f in &ix.filter_fields {
        let c = find(f, "filter")?;
        let Some(kind) = engine::filter::FilterKind::of_pg_type(&c.type_name) else {
            return Err(Error::Config(format!(
                "{at}: filter column {:?} has type {}; filters support integers, real/double/numeric, boolean and text",
                c.name, c.display_type
            )));
        };
        filters.push(FilterSpec {
            column: position(f),
            kind,
        });
    }
    let mut stored = Vec::new();
    for f in &ix.stored_fields {
        find(f, "stored")?;
        stored.push(position(f));
    }

    let value_kinds = columns
        .iter()
        .map(|c| {
            catalog
                .iter()
                .find(|k| &k.name == c)
                .and_then(|k| engine::filter::FilterKind::of_pg_type(&k.type_name))
        })
        .collect();
    let ranking = resolve_ranking(ix, &at, &filters, &columns)?;
    Ok(ResolvedIndex {
        ordinal,
        name: ix.name.clone(),
        schema,
        table,
        columns,
        pk,
        region,
        text,
        geo,
        vector,
        filters,
        stored,
        value_kinds,
        ranking,
    })
}

/// The `ranking` table: a configured text field, a numeric filter field, a finite weight.
fn resolve_ranking(
    ix: &crate::config::IndexConfig,
    at: &str,
    filters: &[FilterSpec],
    columns: &[String],
) -> Result<engine::schema::RankingSpec> {
    let Some(r) = &ix.ranking else {
        return Ok(Default::default());
    };
    let name_field = match &r.name_field {
        None => None,
        Some(n) => Some(
            ix.text_fields
                .iter()
                .position(|t| t.column() == n)
                .ok_or_else(|| {
                    Error::Config(format!(
                        "{at}: ranking.name_field {n:?} is not one of text_fields"
                    ))
                })?,
        ),
    };
    let popularity = match &r.popularity {
        None => None,
        Some(n) => {
            let i = filters
                .iter()
                .position(|f| &columns[f.column] == n)
                .ok_or_else(|| {
                    Error::Config(format!(
                        "{at}: ranking.popularity {n:?} is not one of filter_fields"
                    ))
                })?;
            if !matches!(
                filters[i].kind,
                engine::filter::FilterKind::Int | engine::filter::FilterKind::Float
            ) {
                return Err(Error::Config(format!(
                    "{at}: ranking.popularity {n:?} must be a numeric column"
                )));
            }
            Some(i)
        }
    };
    if !(r.weight.is_finite() && r.weight >= 0.0) {
        return Err(Error::Config(format!(
            "{at}: ranking.weight must be a finite number ≥ 0, not {}",
            r.weight
        )));
    }
    Ok(engine::schema::RankingSpec {
        name_field,
        popularity,
        weight: r.weight,
    })
}

/// Creates the publication when missing and adds configured tables it lacks.
pub async fn ensure_publication(
    client: &Client,
    publication: &str,
    indexes: &[ResolvedIndex],
) -> Result<()> {
    let exists = client
        .query_opt(
            "SELECT 1 FROM pg_publication WHERE pubname = $1",
            &[&publication],
        )
        .await?
        .is_some();
    let tables: Vec<String> = indexes.iter().map(qualified_table).collect();
    if !exists {
        let sql = format!(
            "CREATE PUBLICATION {} FOR TABLE {}",
            quote_ident(publication),
            tables.join(", ")
        );
        client.batch_execute(&sql).await?;
        tracing::info!(publication, tables = %tables.join(", "), "created publication");
        return Ok(());
    }
    for ix in indexes {
        let has = client
            .query_opt(
                "SELECT 1 FROM pg_publication_tables WHERE pubname = $1 AND schemaname = $2 AND tablename = $3",
                &[&publication, &ix.schema, &ix.table],
            )
            .await?
            .is_some();
        if !has {
            let sql = format!(
                "ALTER PUBLICATION {} ADD TABLE {}",
                quote_ident(publication),
                qualified_table(ix)
            );
            client.batch_execute(&sql).await.map_err(|e| {
                Error::Config(format!(
                    "publication {publication:?} lacks table {} and it could not be added: {e}",
                    qualified_table(ix)
                ))
            })?;
            tracing::info!(publication, table = %qualified_table(ix), "added table to publication");
        }
    }
    Ok(())
}
