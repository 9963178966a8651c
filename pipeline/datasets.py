"""The datasets of the pipeline and their columns: one home for names every layer uses.

The contract behind them is docs/contract.md (the inputs in sections 2 and 3, the output in section 4).
"""

from __future__ import annotations

CRM = "crm"
USAGE = "product_usage"
OUTPUT = "company_daily_activity"
DATASETS = (CRM, USAGE, OUTPUT)
TITLES = {CRM: "CRM snapshot", USAGE: "product usage", OUTPUT: "analytics.company_daily_activity"}

# The columns a CRM snapshot file must have (order free; others are ignored with a warning).
CRM_REQUIRED_COLUMNS = ("company_id", "company_name", "country", "industry_tag", "last_contact_at")
# The fields of every row of a usage page.
USAGE_FIELDS = ("company_id", "active_users", "events")

# The staging tables and their columns as loaded. "{stg}" is the configured schema ([pipeline] stg_schema),
# filled in by the warehouse (pipeline.warehouse.sql.with_schema_names).
STAGED_CRM_TABLE = "{stg}.crm_daily"
STAGED_CRM_COLUMNS = ("snapshot_date", *CRM_REQUIRED_COLUMNS)
STAGED_USAGE_TABLE = "{stg}.product_usage_daily"
STAGED_USAGE_COLUMNS = ("activity_date", *USAGE_FIELDS)

# The analytics.loaded_days column holding each dataset's row count of a loaded day.
LOADED_DAY_COUNT = {CRM: "crm_rows", USAGE: "usage_rows", OUTPUT: "output_rows"}
