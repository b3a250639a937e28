"""The contract suites' fixtures: the back ends each contract is run against."""

from tests.contract.buses import contract_loop, served  # noqa: F401
from tests.contract.runtimes import backend, dobby_bus, dobby_daemon, standin  # noqa: F401
