"""Imports every table module so SQLModel.metadata is complete (Alembic, tests)."""

from certd.store import models  # noqa: F401
from certd.store import hosts  # noqa: F401
from certd.store import chargers  # noqa: F401
from certd.store import trust  # noqa: F401
from certd.store import renewal  # noqa: F401
from certd.store import rollover  # noqa: F401
from certd.store import leases  # noqa: F401
from certd.store import charger_ca  # noqa: F401
from certd.store import mqtt  # noqa: F401
from certd.store import nodes  # noqa: F401
