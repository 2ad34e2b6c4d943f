"""One schema for everything vito reads from a file or a command line: YAML, and mappings into dataclasses.

Why one package: the pretraining config, every evaluation's Settings, encoder entries and suite files are all
"a mapping a user wrote, into a typed dataclass". Read by one loader with one rule set
(:mod:`vito.schema.mapping`), a value means the same everywhere: ``1e-5`` is a number in a config and in a
suite, a key given twice is an error in both, and the text ``"3"`` is an integer in neither (only a command
line's words are text to be parsed, :mod:`vito.schema.command_line`).
"""

from vito.schema.command_line import add_arguments, flag_name, from_namespace
from vito.schema.errors import SchemaError
from vito.schema.mapping import from_mapping, refuse_unknown
from vito.schema.yaml_files import StrictLoader, dump_yaml, parse_yaml, read_yaml

__all__ = ["SchemaError", "StrictLoader", "add_arguments", "dump_yaml", "flag_name", "from_mapping", "from_namespace",
           "parse_yaml", "read_yaml", "refuse_unknown"]
