"""The manifest file: ``Manifest`` (top level), ``CatalogSpec``, ``ProvenanceSpec``, and
``manifest_json_schema()``, the JSON Schema ``framefold schema`` prints.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, field_validator

from .catalog_filter import MAX_FILTER_CHARS, FilterError
from .catalog_filter import parse as parse_filter
from .fields import DEFAULT_SIGNING_ALG, SIGNING_ALGORITHMS, FieldPath, RelPath, SafeName, SigningAlg, Strict, did_you_mean, raise_rule_problems, value_error
from .items import CATALOG_FIELDS, SECTION_MODELS, ItemEntry, ItemFields


# --- The manifest file -------------------------------------------------------------------
class CatalogSpec(Strict):
    """`catalog:` — more items from a Parquet or CSV table, one row per (matching) row."""

    path: RelPath = Field(description="Table file (.parquet or .csv), located like an item's image (relative to "
                          "the manifest folder, under FRAMEFOLD_INPUT_ROOTS, or a store URL); read by pyarrow, "
                          "only the mapped and filtered columns.")
    columns: dict[str, Annotated[str, Field(min_length=1)]] = Field(
        description="Item field -> column name; a null cell means 'not set' (defaults apply). id is required "
        "(a text column); nested keys use dotted names (window.length, motion.amplitude); size takes "
        f"'WxH' text or a [w, h] list. Mappable: {', '.join(CATALOG_FIELDS)}.",
    )
    filter: Annotated[str, Field(min_length=1, max_length=MAX_FILTER_CHARS)] | None = Field(
        None,
        description="Keep only the rows matching this SQL condition over catalog columns, e.g. "
        "\"category IN ('mugs', 'cups') AND updated_at >= '2026-11-01'\": = != < <= > >= between a column and a "
        "value ('text', number, true/false, ISO date/time), LIKE 'cup%', IN (...), BETWEEN a AND b, IS [NOT] NULL, "
        "AND/OR/NOT, parentheses, lower()/upper(). Applied by pyarrow before rows are read.",
    )

    # field validators, each on its own field: every problem among path, columns and filter at once
    @field_validator("path")
    @classmethod
    def _parquet_or_csv(cls, value: str) -> str:
        if Path(value).suffix.lower() not in (".parquet", ".csv"):
            raise value_error(f"must name a .parquet or .csv file, got {value!r}")
        return value

    @field_validator("filter")
    @classmethod
    def _filter_parses(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                parse_filter(value)
            except FilterError as error:
                raise value_error(str(error)) from None
        return value

    @field_validator("columns")
    @classmethod
    def _columns_name_item_fields(cls, columns: dict[str, str]) -> dict[str, str]:
        problems: list[tuple[FieldPath, str]] = []
        if "id" not in columns:
            problems.append(("id", "required: map id to the column holding item ids, e.g. columns: {id: sku}"))
        for field in columns:
            if field in CATALOG_FIELDS:
                continue
            if field in SECTION_MODELS:
                example = next(iter(SECTION_MODELS[field].model_fields))
                message = f"{field!r} is a section: map each of its keys with a dotted name, e.g. '{field}.{example}'"
            elif field in ItemEntry.model_fields:
                message = f"{field!r} is not a per-row field; set it in defaults or items"
            elif field.split(".", 1)[0] in SECTION_MODELS:
                section = field.split(".", 1)[0]
                keys = [name for name in CATALOG_FIELDS if name.startswith(f"{section}.")]
                message = f"not a key of {section}" + did_you_mean(field, keys)
            else:
                message = "not an item field" + did_you_mean(field, CATALOG_FIELDS)
            problems.append(((field,), message))  # under catalog.columns
        raise_rule_problems(problems)
        return columns


class C2paSpec(Strict):
    """A C2PA signer: certificate chain and private key files (PEM), inside the manifest folder."""

    cert: RelPath = Field(
        description="PEM file: the end-entity signing certificate followed by its intermediate(s), relative to the manifest folder."
    )
    key: RelPath = Field(description="PEM file: the certificate's private key, relative to the manifest folder.")
    alg: SigningAlg = Field(
        DEFAULT_SIGNING_ALG, description=f"Signature algorithm matching the key: {' | '.join(SIGNING_ALGORITHMS)}."
    )
    tsa_url: Annotated[str, Field(pattern=r"^https?://\S+$", max_length=2048)] | None = Field(
        None, description="RFC 3161 time-stamp authority URL contacted while signing; none: no time-stamp."
    )


class ProvenanceSpec(Strict):
    """How outputs prove where they came from, beyond the sidecar and ledger."""

    c2pa: C2paSpec | None = Field(
        None, description="Sign mp4, gif and poster outputs with C2PA content credentials (else: FRAMEFOLD_C2PA_* settings)."
    )


class Manifest(Strict):
    """A framefold manifest: one job, many items."""

    model_config = ConfigDict(title="framefold manifest")

    version: Literal[1] = Field(description="Manifest format version; must be 1.")
    name: SafeName = Field(description="Job name: a safe file name.")
    output: RelPath = Field(description="Output root: relative to the manifest folder, an absolute path under "
                            "FRAMEFOLD_OUTPUT_ROOTS, or a store URL (s3://bucket/prefix) under the manifest's folder "
                            "or those roots.")
    defaults: ItemFields = Field(
        default_factory=ItemFields, description="Item fields applied to every item; items override (nested sections key by key)."
    )
    items: list[ItemEntry] = Field(default_factory=list, description="Items, each with its own id.")
    catalog: CatalogSpec | None = Field(None, description="More items from a Parquet or CSV table.")
    provenance: ProvenanceSpec | None = Field(None, description="Content credentials (C2PA signing).")

    @field_validator("version", mode="before")
    @classmethod
    def _exactly_one(cls, value: object) -> object:
        if type(value) is not int or value != 1:
            raise value_error(f"must be 1 (the manifest version this framefold reads), got {value!r}")
        return value


def manifest_json_schema() -> dict[str, Any]:
    """JSON Schema (draft 2020-12) of a manifest file."""
    schema = Manifest.model_json_schema()
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}
