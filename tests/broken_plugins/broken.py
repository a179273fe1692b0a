"""A local plugin that fails to import: the lab must report it by name and load the rest."""

import this_module_does_not_exist  # noqa: F401
