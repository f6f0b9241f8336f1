"""The sandbox account's reference data: packages, schedules, clusters, users, errors.

The names and numbers are static (they are what makes the history look real);
ids and dates are drawn from the history's random generator, so a different
seed gives a different-looking but equally plausible account.

Times here are *history seconds* (see history.py): integers on the history's
own time line, where 0 is the first job's creation. Catalog objects predate it,
so their times are negative.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

DAY = 86_400

# destination kind -> (component type, preview type)
DESTINATIONS = {
    "snowflake": ("snowflake_destination_component", "csv"),
    "bigquery": ("google_bigquery_destination_component", "csv"),
    "redshift": ("amazon_redshift_destination_component", "csv"),
    "database": ("database_destination_component", "csv"),
    "s3": ("cloud_storage_destination_component", "json"),
    "salesforce": ("salesforce_destination_component", "csv"),
}

COLUMN_POOL = ("id", "name", "email", "status", "amount", "currency", "account_id",
               "country", "created_at", "updated_at", "owner_id", "external_id")


@dataclass(frozen=True)
class OutputSpec:
    name: str
    destination: str
    records: float  # typical records written by one full run


@dataclass(frozen=True)
class PackageSpec:
    name: str
    description: str
    runtime_s: int       # median runtime of a run
    failure_rate: float
    weight: float        # relative share of all runs
    cluster: int         # index into CLUSTERS
    outputs: tuple[OutputSpec, ...]
    variables: tuple[str, ...] = ()   # names render.Renderer.variables knows
    errors: tuple[int, ...] = (0,)    # indices into ERRORS that this package tends to hit


@dataclass(frozen=True)
class ErrorSpec:
    text: str
    summary: str
    action_items: tuple[str, ...]


def _o(name: str, destination: str, records: float) -> OutputSpec:
    return OutputSpec(name, destination, records)


ERRORS = (
    ErrorSpec("Package failed to execute.", "The package failed without a specific error",
              ("Open the job log for the failing component.", "Retry the job.")),
    ErrorSpec("Failed to send request: id not found on Customer", "Customer ID missing",
              ("Validate the Customer ID.", "Retry the job.")),
    ErrorSpec("java.lang.OutOfMemoryError: Java heap space", "The cluster ran out of memory",
              ("Add nodes to the cluster or pick a larger instance type.",
               "Split the input into smaller batches.")),
    ErrorSpec("Connection refused: snowflake.example.com:443", "The destination refused the connection",
              ("Check the connection's host and the network allow list.", "Retry the job.")),
    ErrorSpec("ERROR 1066: Unable to open iterator for alias joined_orders",
              "A join step failed to read its input",
              ("Check the join keys of the joined_orders component.",)),
    ErrorSpec("Salesforce API error REQUEST_LIMIT_EXCEEDED: TotalRequests Limit exceeded.",
              "The Salesforce daily API limit was reached",
              ("Lower the package's API call volume.", "Run the job after the limit resets.")),
    ErrorSpec('password authentication failed for user "etl" (connection \'Postgres prod\')',
              "Invalid credentials for the database connection",
              ("Update the connection's password.", "Test the connection, then retry.")),
    ErrorSpec("Input path s3://acme-data-lake/raw/events/ does not exist",
              "The source path is missing",
              ("Check that the upstream export ran.", "Verify the InputPath variable.")),
    ErrorSpec('Column "région" not found in source schema — did the export change? 🤔',
              "A source column disappeared",
              ("Refresh the source schema in the package.", "Map or drop the missing column.")),
    ErrorSpec("Read timed out after 300000 ms (NetSuite SuiteTalk)", "The NetSuite API timed out",
              ("Reduce batch_size.", "Retry the job outside NetSuite's busy hours.")),
    ErrorSpec('duplicate key value violates unique constraint "customers_pkey"',
              "Duplicate rows were written to the destination",
              ("Switch the destination to merge (upsert) mode.", "Deduplicate the source.")),
    ErrorSpec('invalid byte sequence for encoding "UTF8": 0xe9 0x74 — Zürich/Śląsk 🚫',
              "The source data is not valid UTF-8",
              ("Set the source file encoding to Latin-1.", "Clean the offending rows.")),
    ErrorSpec("Cluster terminated unexpectedly: spot instance reclaimed",
              "The cluster was lost while the job ran",
              ("Use on-demand instances for this cluster.", "Retry the job.")),
)

STOP_MESSAGE = "Job stopped by user request."

# ---------------------------------------------------------------------------
# packages: name, description, median runtime, failure rate, weight, cluster, outputs, vars, errors
PACKAGES = (
    PackageSpec("Salesforce accounts to Snowflake", "Incremental copy of Salesforce accounts",
                420, 0.03, 6, 0, (_o("sf_accounts", "snowflake", 2e5),), ("since_date",), (5, 3)),
    PackageSpec("Salesforce opportunities to Snowflake", "Opportunities and their history",
                600, 0.04, 6, 0, (_o("sf_opportunities", "snowflake", 5e5),
                                  _o("sf_opportunity_history", "snowflake", 2e6)),
                ("since_date",), (5, 3, 0)),
    PackageSpec("NetSuite customers to warehouse", "Copies customers nightly",
                1650, 0.36, 3, 1, (_o("netsuite_customers", "database", 3e5),),
                ("InputPath", "batch_size"), (1, 9, 1, 11)),
    PackageSpec("NetSuite invoices to warehouse", "Invoices and invoice lines",
                2400, 0.12, 3, 1, (_o("netsuite_invoices", "database", 1.2e6),
                                   _o("netsuite_invoice_lines", "database", 8e6)),
                ("InputPath", "batch_size"), (9, 2)),
    PackageSpec("Shopify orders to BigQuery", "Orders and line items every hour",
                900, 0.02, 7, 2, (_o("shopify_orders", "bigquery", 4e5),
                                  _o("shopify_order_items", "bigquery", 1.5e6)), (), (0, 4)),
    PackageSpec("Stripe charges to Redshift", "Charges, refunds and disputes",
                300, 0.02, 7, 0, (_o("stripe_charges", "redshift", 1.5e5),), ("since_date",), (6,)),
    PackageSpec("Zendesk tickets to Snowflake", "Tickets with comments",
                360, 0.04, 4, 0, (_o("zendesk_tickets", "snowflake", 8e4),
                                  _o("zendesk_comments", "snowflake", 6e5)), (), (3, 8)),
    PackageSpec("HubSpot contacts to Postgres", "Contacts and lifecycle stages",
                240, 0.05, 5, 4, (_o("hubspot_contacts", "database", 3e5),), ("full_refresh",), (6, 10)),
    PackageSpec("Clickstream events to S3 data lake", "Raw web events, partitioned by hour",
                5400, 0.07, 2, 2, (_o("events_raw", "s3", 3e9),), ("InputPath",), (2, 7, 12)),
    PackageSpec("Web sessions rollup", "Sessionizes clickstream events",
                3600, 0.05, 2, 2, (_o("web_sessions", "bigquery", 1.2e9),
                                   _o("web_session_pages", "bigquery", 2.5e9)), ("InputPath",), (2, 12)),
    PackageSpec("Google Ads spend to BigQuery", "Daily campaign spend",
                180, 0.02, 3, 2, (_o("google_ads_spend", "bigquery", 2e4),), ("lookback_days",), (0,)),
    PackageSpec("Facebook Ads insights to BigQuery", "Ad set insights by day",
                240, 0.06, 3, 2, (_o("fb_ads_insights", "bigquery", 5e4),), ("lookback_days",), (0, 8)),
    PackageSpec("Marketo leads to Snowflake", "Leads with activity scores",
                720, 0.38, 3, 0, (_o("marketo_leads", "snowflake", 4e5),), ("since_date",), (8, 11, 0)),
    PackageSpec("Jira issues to Postgres", "Issues, sprints and worklogs",
                120, 0.02, 2, 4, (_o("jira_issues", "database", 3e4),
                                  _o("jira_worklogs", "database", 9e4)), (), (6,)),
    PackageSpec("Intercom conversations to Snowflake", "Conversations and parts",
                300, 0.03, 2, 0, (_o("intercom_conversations", "snowflake", 5e4),), (), (3,)),
    PackageSpec("MySQL orders replica to Redshift", "Nightly full copy of the orders database",
                1800, 0.04, 2, 1, (_o("orders", "redshift", 6e6), _o("order_items", "redshift", 2e7),
                                   _o("customers", "redshift", 9e5)), ("full_refresh",), (2, 10)),
    PackageSpec("Product catalog to Postgres", "Products and prices from the ERP",
                150, 0.02, 2, 4, (_o("products", "database", 4e4),), (), (0,)),
    PackageSpec("Inventory snapshot to S3", "Daily stock levels per warehouse",
                600, 0.03, 2, 1, (_o("inventory_snapshot", "s3", 2e6),), ("InputPath",), (7,)),
    PackageSpec("Daily finance close to Snowflake", "GL balances and journal entries",
                2700, 0.05, 1, 1, (_o("gl_balances", "snowflake", 2e5),
                                   _o("journal_entries", "snowflake", 3e6)), ("since_date",), (10, 3)),
    PackageSpec("Customer 360 merge", "Merges CRM, billing and support into one customer table",
                4800, 0.06, 1, 2, (_o("customer_360", "snowflake", 1e6), _o("customer_keys", "snowflake", 3e6),
                                   _o("merge_conflicts", "s3", 2e3)), (), (2, 4, 10)),
    PackageSpec("Mailchimp campaigns to BigQuery", "Campaigns and email activity",
                90, 0.02, 2, 2, (_o("mailchimp_activity", "bigquery", 2e5),), (), (0,)),
    PackageSpec("Amplitude events to Snowflake", "Product events export",
                3000, 0.05, 2, 2, (_o("amplitude_events", "snowflake", 1.5e8),), ("InputPath",), (7, 2)),
    PackageSpec("Workday employees to warehouse", "HR master data",
                200, 0.02, 1, 4, (_o("employees", "database", 5e3),), (), (6,)),
    PackageSpec("QuickBooks ledger to Postgres", "Ledger for the EU subsidiaries",
                150, 0.03, 1, 4, (_o("qb_ledger", "database", 6e4),), ("region",), (11, 6)),
    PackageSpec("Segment tracks to Redshift", "Track calls from all sources",
                2400, 0.05, 2, 1, (_o("segment_tracks", "redshift", 5e8),), ("InputPath",), (2, 7)),
    PackageSpec("GA4 sessions to BigQuery", "Sessions and conversions",
                900, 0.03, 2, 2, (_o("ga4_sessions", "bigquery", 3e6),), ("lookback_days",), (0,)),
    PackageSpec("Xero invoices to Snowflake", "Invoices for the APAC entities",
                120, 0.03, 1, 0, (_o("xero_invoices", "snowflake", 2e4),), ("region",), (3, 11)),
    PackageSpec("Product usage to Salesforce", "Reverse ETL: usage scores onto accounts",
                480, 0.32, 3, 3, (_o("account_usage_scores", "salesforce", 2e4),), ("batch_size",),
                (5, 1, 10)),
    PackageSpec("Support SLA report to S3", "Weekly SLA breaches for the support leads",
                45, 0.02, 1, 3, (_o("sla_report", "s3", 900),), (), (7,)),
    PackageSpec("Dedupe CRM contacts", "Flags duplicate contacts in HubSpot",
                30, 0.04, 2, 4, (_o("duplicate_contacts", "database", 1e3),), (), (10,)),
)

# schedules: name, package indices, retries on failure (names say nothing of the cadence: a
# scenario picks the intervals, history.py)
SCHEDULES = (
    ("NetSuite sync", (2, 3), 3),
    ("Salesforce sync", (0, 1), 3),
    ("Ecommerce orders", (4, 5), 0),
    ("Support data", (6, 14), 0),
    ("Marketing", (10, 11, 12, 20), 3),
    ("Event pipeline", (8, 9, 21, 24), 3),
    ("Finance close", (18, 23, 26), 0),
    ("CRM sync", (7, 29), 0),
    ("Product analytics", (25, 19), 3),
    ("Reverse ETL", (27,), 3),
)

# name, nodes, type, region, zone, instance type
CLUSTERS = (
    ("Production", 4, "production", "amazon-web-services::us-east-1", "us-east-1a", "m5.2xlarge"),
    ("Nightly", 2, "production", "amazon-web-services::us-east-1", "us-east-1b", "m3.xlarge"),
    ("Analytics XL", 8, "production", "amazon-web-services::eu-west-1", "eu-west-1a", "r5.4xlarge"),
    ("Reverse ETL", 2, "production", "amazon-web-services::us-west-2", "us-west-2c", "m5.xlarge"),
    ("Sandbox", 1, "sandbox", "amazon-web-services::us-east-1", "us-east-1d", "m5.large"),
)

USERS = ("Dana Whitfield", "Ravi Iyer", "Sofia Márquez", "Tom Becker", "Aiko Tanaka")


@dataclass(frozen=True)
class CatalogUser:
    id: int
    name: str


@dataclass(frozen=True)
class CatalogCluster:
    id: int
    name: str
    nodes: int
    type: str
    region: str
    zone: str
    instance_type: str
    owner: int        # index into Catalog.users
    created: int      # history seconds
    updated: int


@dataclass(frozen=True)
class CatalogSchedule:
    id: int
    name: str
    packages: tuple[int, ...]
    retries: int
    owner: int        # index into Catalog.users


@dataclass(frozen=True)
class CatalogPackage:
    id: int
    spec: PackageSpec
    owner: int                    # index into Catalog.users
    schedule: int | None          # index into Catalog.schedules
    created: int                  # history seconds
    updated: int
    output_fields: tuple[tuple[str, ...], ...]
    component_numbers: tuple[int, ...]
    default_variables: dict


@dataclass(frozen=True)
class Catalog:
    users: tuple[CatalogUser, ...]
    clusters: tuple[CatalogCluster, ...]
    schedules: tuple[CatalogSchedule, ...]
    packages: tuple[CatalogPackage, ...]
    package_weights: tuple[float, ...]


def _increasing_ids(rng: random.Random, start: int, count: int, max_gap: int) -> list[int]:
    ids, current = [], start
    for _ in range(count):
        current += rng.randint(1, max_gap)
        ids.append(current)
    return ids


def build_catalog(rng: random.Random) -> Catalog:
    """Give the static reference data ids, owners and dates."""
    users = tuple(CatalogUser(i, name) for i, name in
                  zip(_increasing_ids(rng, 2, len(USERS), 12), USERS))
    clusters = tuple(
        CatalogCluster(cid, name, nodes, kind, region, zone, itype, rng.randrange(len(users)),
                -rng.randint(90, 700) * DAY, -rng.randint(1, 80) * DAY)
        for cid, (name, nodes, kind, region, zone, itype)
        in zip(_increasing_ids(rng, 40, len(CLUSTERS), 30), CLUSTERS))
    schedules = tuple(
        CatalogSchedule(sid, name, pkgs, retries, rng.randrange(len(users)))
        for sid, (name, pkgs, retries) in zip(_increasing_ids(rng, 3, len(SCHEDULES), 5), SCHEDULES))
    schedule_of = {p: s for s, sched in enumerate(schedules) for p in sched.packages}
    package_ids = _increasing_ids(rng, 2300, len(PACKAGES), 60)
    packages = tuple(_build_package(rng, pid, spec, schedule_of.get(i), schedules, len(users))
                     for i, (pid, spec) in enumerate(zip(package_ids, PACKAGES)))
    return Catalog(users, clusters, schedules, packages, tuple(p.weight for p in PACKAGES))


def _build_package(rng: random.Random, package_id: int, spec: PackageSpec, schedule: int | None,
                   schedules: tuple[CatalogSchedule, ...], user_count: int) -> CatalogPackage:
    owner = schedules[schedule].owner if schedule is not None else rng.randrange(user_count)
    created = -rng.randint(120, 900) * DAY
    fields = tuple(("id",) + tuple(rng.sample(COLUMN_POOL[1:], rng.randint(1, 5)))
                   for _ in spec.outputs)
    first_component = rng.randint(1, 4)
    components = tuple(first_component + k for k in range(len(spec.outputs)))
    defaults = {name: VARIABLE_DEFAULTS[name] for name in spec.variables
                if name in VARIABLE_DEFAULTS and rng.random() < 0.5}
    return CatalogPackage(package_id, spec, owner, schedule, created, -rng.randint(1, 100) * DAY,
                   fields, components, defaults)


VARIABLE_DEFAULTS = {"batch_size": 1000, "full_refresh": "'false'", "region": "'us'"}


# ---------------------------------------------------------------------------
# What only the catalog endpoints show: packages, clusters and a schedule that
# no job of the history uses (workflows, archived packages, terminated clusters,
# a disabled schedule). Drawn from their own generator, after the history's,
# so adding them changed no job.

# name, description, flow type, status
EXTRA_PACKAGES = (
    ("Nightly warehouse orchestration", "Runs the warehouse loads in order, then the rollups",
     "workflow", "active"),
    ("Marketing attribution workflow", "Ads spend, sessions and CRM joined into attribution",
     "workflow", "active"),
    ("Legacy Magento orders to MySQL", "Replaced by Shopify orders to BigQuery", "dataflow", "archived"),
    ("Mixpanel export (old)", "Superseded by Amplitude events to Snowflake", "dataflow", "archived"),
    ("Pardot prospects to Redshift", "Marketing moved to Marketo", "dataflow", "archived"),
)
# name, nodes, type, region, zone, instance type
EXTRA_CLUSTERS = (
    ("Migration 2025", 6, "production", "amazon-web-services::us-east-1", "us-east-1a", "r5.2xlarge"),
    ("Ad-hoc backfill", 3, "sandbox", "amazon-web-services::eu-west-1", "eu-west-1b", "m5.xlarge"),
)
# name, indices into EXTRA_PACKAGES
EXTRA_SCHEDULES = (("Legacy nightly export", (2, 3)),)


@dataclass(frozen=True)
class ExtraPackage:
    id: int
    name: str
    description: str
    flow_type: str
    status: str
    owner: int        # index into Catalog.users
    created: int      # history seconds
    updated: int      # archived packages: when they were archived


@dataclass(frozen=True)
class ExtraCluster:
    id: int
    name: str
    nodes: int
    type: str
    region: str
    zone: str
    instance_type: str
    owner: int
    created: int
    terminated: int


@dataclass(frozen=True)
class ExtraSchedule:
    id: int
    name: str
    packages: tuple[int, ...]   # indices into Extras.packages
    owner: int
    created: int
    last_run: int               # its last run, before it was disabled
    updated: int                # when it was disabled
    executions: int


@dataclass(frozen=True)
class Extras:
    packages: tuple[ExtraPackage, ...]
    clusters: tuple[ExtraCluster, ...]
    schedules: tuple[ExtraSchedule, ...]


def build_extras(seed: int, catalog: Catalog) -> Extras:
    rng = random.Random(f"catalog-extras:{seed}")
    users = len(catalog.users)
    package_ids = _increasing_ids(rng, catalog.packages[-1].id, len(EXTRA_PACKAGES), 60)
    packages = []
    for pid, (name, description, flow_type, status) in zip(package_ids, EXTRA_PACKAGES):
        if status == "archived":
            created, updated = -rng.randint(500, 900) * DAY, -rng.randint(150, 300) * DAY
        else:
            created, updated = -rng.randint(60, 200) * DAY, -rng.randint(1, 30) * DAY
        packages.append(ExtraPackage(pid, name, description, flow_type, status, rng.randrange(users),
                                     created, updated))
    cluster_ids = _increasing_ids(rng, catalog.clusters[-1].id, len(EXTRA_CLUSTERS), 30)
    clusters = tuple(
        ExtraCluster(cid, name, nodes, kind, region, zone, itype, rng.randrange(users),
                     -rng.randint(200, 400) * DAY, -rng.randint(90, 150) * DAY)
        for cid, (name, nodes, kind, region, zone, itype) in zip(cluster_ids, EXTRA_CLUSTERS))
    schedule_ids = _increasing_ids(rng, catalog.schedules[-1].id, len(EXTRA_SCHEDULES), 5)
    schedules = []
    for sid, (name, indices) in zip(schedule_ids, EXTRA_SCHEDULES):
        created = max(packages[i].created for i in indices) + rng.randint(1, 20) * DAY
        disabled = min(packages[i].updated for i in indices) - rng.randint(1, 10) * DAY
        last_run = disabled - rng.randint(1, 20) * 3600
        schedules.append(ExtraSchedule(sid, name, indices, packages[indices[0]].owner, created,
                                       last_run, disabled, (last_run - created) // DAY))
    return Extras(tuple(packages), clusters, tuple(schedules))
