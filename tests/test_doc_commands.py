"""Every command the docs show works as written: each drl-train, drl-eval and drl-reward-server command in
README.md and docs/guide/*.md (code blocks and inline code) composes and validates, and each
`python scripts/X.py --flag ...` parses under that script's own argparse.

Placeholders (`<run dir>`, `RUN_DIR`, `~`, `$HOME`) become real-looking values; the config files a page shows
in a yaml block (`~/my_conf/reward/my_judge.yaml`, ...) are written to a scratch home first, so
`hydra.searchpath=[file://$HOME/my_conf]` finds them. A `-m` sweep composes once per swept value. Nothing
trains, samples or imports torch: composing is all that runs.
"""

from __future__ import annotations

import argparse
import ast
import builtins
import copy
import importlib
import itertools
import re
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs" / "guide").glob("*.md"))]
PROGRAMS = ("drl-train", "drl-eval", "drl-reward-server")
MODULES = {"drl.cli": "drl-train", "drl.evaluation.cli": "drl-eval", "drl.rewards.server": "drl-reward-server"}
SHELL_FENCES = {"", "bash", "sh", "shell", "console"}
CONFIG_GROUPS = {p.name for p in (ROOT / "conf").iterdir() if p.is_dir()} | {"launcher"}
PLACEHOLDER_RUN = "/tmp/drl-docs/run"  # what a <run dir>, <bc run>, RUN_DIR ... stands for
OPERATORS = {"&&", "||", ";", "|", "&", "(", ")"}
FENCE_LINE = re.compile(r"^\s*```\s*([\w-]*)")
INLINE_CODE = re.compile(r"(?<!`)`([^`\n]+)`(?!`)")
YAML_PATH = re.compile(r"^#\s*((?:~/|\$HOME/)?[\w./-]+\.yaml)\b")
# Hydra's own command-line flags: (takes a value)
HYDRA_FLAGS = {"-m": False, "--multirun": False, "--help": False, "-h": False, "--hydra-help": False, "--resolve": False,
               "--info": False, "-i": False, "--plan": False, "--cfg": True, "-c": True, "--package": True, "-p": True}  # fmt: skip


@dataclass(frozen=True)
class Snippet:
    """A piece of shell text from a page: a code block's line (continuations joined) or an inline code span."""

    page: str
    line: int
    text: str


@dataclass(frozen=True)
class Command:
    program: str  # drl-train, drl-eval, drl-reward-server, or scripts/<name>.py
    args: tuple[str, ...]
    where: str  # page:line

    def __str__(self) -> str:
        return f"{self.where}: {self.program} {shlex.join(self.args)}"


# ---------------------------------------------------------------------------------------------- extraction


def snippets(text: str, page: str = "page") -> list[Snippet]:
    """Shell lines of the page's code blocks and its inline code spans; yaml blocks give their comment lines
    (an experiment is headed by its command)."""
    out, fence, buffer, start = [], None, "", 0
    for number, line in enumerate(text.splitlines(), 1):
        opened = FENCE_LINE.match(line)
        if fence is None:
            if opened:
                fence = opened.group(1).lower()
                continue
            out += [Snippet(page, number, span) for span in INLINE_CODE.findall(line)]
            continue
        if opened and not opened.group(1):  # the closing fence
            fence = None
            continue
        if fence in ("yaml", "yml"):
            if line.lstrip().startswith("#"):
                out.append(Snippet(page, number, line.lstrip()[1:]))
            continue
        if fence not in SHELL_FENCES:
            continue
        if not buffer:
            start = number
        if line.rstrip().endswith("\\"):
            buffer += line.rstrip()[:-1] + " "
            continue
        out.append(Snippet(page, start, buffer + line))
        buffer = ""
    return out


def fill_placeholders(text: str, home: str) -> str:
    """<run dir>, <bc run>, <...>, RUN_DIR -> a run directory's path; ~ and $HOME -> the scratch home."""
    text = re.sub(r"<[^<>\n]*>", PLACEHOLDER_RUN, text)
    text = re.sub(r"\bRUN_DIR\b", PLACEHOLDER_RUN, text)
    text = text.replace("$HOME", home).replace("${HOME}", home)
    return re.sub(r"(?<![\w/])~(?=/)", home, text)


def tokens(text: str) -> list[str]:
    """Shell words, with operators (&&, |, ;, &) as their own words and # comments dropped."""
    empty = "\x00"  # shlex drops an empty quoted word ('') when it splits operators off
    lexer = shlex.shlex(re.sub(r"(?<!\S)(''|\"\")(?!\S)", empty, text), posix=True, punctuation_chars=True)
    lexer.whitespace_split, lexer.commenters = True, ""
    words = [w.replace(empty, "") for w in lexer]
    for i, word in enumerate(words):
        if word.startswith("#"):
            return words[:i]
    return words


def _segments(words: list[str]) -> list[list[str]]:
    segments, current = [], []
    for word in words:
        if word in OPERATORS:
            segments.append(current)
            current = []
        else:
            current.append(word)
    return [s for s in segments + [current] if s]


def commands_in(snippet: Snippet, home: str = "/home/user") -> list[Command]:
    """The drl commands (and python scripts/X.py calls) in one snippet."""
    try:
        words = tokens(fill_placeholders(snippet.text, home))
    except ValueError:  # unbalanced quotes: prose in backticks, not a command
        return []
    where = f"{snippet.page}:{snippet.line}"
    found = []
    for segment in _segments(words):
        for i, word in enumerate(segment):
            if word in PROGRAMS:
                found.append(Command(word, tuple(a for a in segment[i + 1 :] if a != "..."), where))
                break
            if word == "-m" and i + 1 < len(segment) and segment[i + 1] in MODULES:
                found.append(Command(MODULES[segment[i + 1]], tuple(a for a in segment[i + 2 :] if a != "..."), where))
                break
            if re.fullmatch(r"(\./)?scripts/\w+\.py", word) and i > 0 and re.fullmatch(r"python3?", segment[i - 1]):
                found.append(Command(word.removeprefix("./"), tuple(segment[i + 1 :]), where))
                break
    return found


def doc_commands(pages=PAGES, home: str = "/home/user") -> list[Command]:
    out = []
    for page in pages:
        for snippet in snippets(page.read_text(), str(page.relative_to(ROOT))):
            out += commands_in(snippet, home)
    return out


def config_files(pages=PAGES) -> dict[str, str]:
    """The config files the pages show: a yaml block whose first line names it (`# ~/my_conf/reward/x.yaml`),
    or one right after prose naming it (`... and `my_conf/experiment/my_run.yaml``)."""
    files = {}
    for page in pages:
        for block in re.finditer(r"^```ya?ml\n(.*?)^```", page.read_text(), re.S | re.M):
            body = block.group(1)
            named = YAML_PATH.match(body)
            prose = re.findall(r"`((?:~/)?[\w./-]+\.yaml)`", page.read_text()[max(0, block.start() - 300) : block.start()])
            path = named.group(1) if named else prose[-1] if prose else None
            if path and "my_" in path:  # the user's own files, not excerpts of conf/
                files[re.sub(r"^(~|\$HOME)/", "", path)] = body
    return files


# ---------------------------------------------------------------------------------------------- checks


def hydra_overrides(args: tuple[str, ...]) -> tuple[list[str], bool]:
    """(the overrides, whether -m was given), Hydra's own flags taken out; an unknown flag is an error."""
    overrides, multirun, skip = [], False, False
    for arg in args:
        if skip:
            skip = False
            continue
        if arg in HYDRA_FLAGS:
            multirun |= arg in ("-m", "--multirun")
            skip = HYDRA_FLAGS[arg]
        elif arg.startswith("-"):
            raise ValueError(f"{arg!r} is not a flag of Hydra's command line")
        else:
            overrides.append(arg)
    return overrides, multirun


def sweep_points(overrides: list[str], multirun: bool) -> list[list[str]]:
    """Each job of a -m sweep (one per combination of swept values); without -m, the overrides as they are."""
    if not multirun:
        return [overrides]
    from hydra.core.override_parser.overrides_parser import OverridesParser

    choices = []
    for o in OverridesParser.create().parse_overrides(overrides):
        if o.is_sweep_override():
            choices.append([f"{o.get_key_element()}={v}" for v in o.sweep_string_iterator()])
        else:
            choices.append([o.input_line])
    return [list(point) for point in itertools.product(*choices)]


_BASES: dict = {}  # (config name, the overrides that choose config files) -> the composed DictConfig


def _chooses_configs(override) -> bool:
    """Does the override take part in choosing config files (a group option, Hydra's search path), as
    opposed to setting a key of the composed config (hydra.run.dir, hydra.launcher.* included)?"""
    key = override.key_or_group
    return key == "hydra.searchpath" or key.split("/")[0] in CONFIG_GROUPS | {"hydra"}


def compose(config_name: str, overrides: list[str]):
    """Hydra's compose of ``overrides``, done once per distinct choice of config files: the overrides that
    choose options (and hydra.*) go through hydra.compose, then the key overrides are applied to a copy
    exactly as Hydra applies them after composing (ConfigLoaderImpl._apply_overrides_to_config). That is about
    two compositions in three; test_cached_composition_equals_hydras_compose checks it changes nothing."""
    from hydra import compose as hydra_compose
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import ConfigCompositionException
    from omegaconf import open_dict

    parsed = OverridesParser.create().parse_overrides(overrides)
    for o in parsed:  # Hydra's check outside -m (ConfigLoaderImpl.validate_sweep_overrides_legal)
        if o.is_sweep_override():
            raise ConfigCompositionException(f"Ambiguous value for argument '{o.input_line}'")
    choose = [o.input_line for o in parsed if _chooses_configs(o)]
    key = (config_name, tuple(sorted(choose)))  # one option per group: their order does not matter
    if key not in _BASES:
        _BASES[key] = hydra_compose(config_name=config_name, overrides=choose, return_hydra_config=True)
    cfg = copy.deepcopy(_BASES[key])
    ConfigLoaderImpl._apply_overrides_to_config([o for o in parsed if not _chooses_configs(o)], cfg)
    with open_dict(cfg):  # as hydra.compose returns it
        del cfg["hydra"]
    return cfg


def compose_train(overrides: list[str]):
    """What drl.cli.compose_config checks, inside the module's Hydra context: compose, then validate."""
    from drl.config import validate

    return validate(compose("config", overrides))


def compose_eval(overrides: list[str]):
    """What drl-eval does with its overrides before any sampling: compose conf/eval.yaml and validate it."""
    from drl.evaluation.cli import validate_eval

    return validate_eval(compose("eval", overrides))


def check_drl_command(command: Command) -> int:
    """Compose and validate the command (every point of a sweep); the number of configs composed."""
    args = command.args
    if command.program == "drl-reward-server":
        parser, _ = script_parser(ROOT / "drl" / "rewards" / "server.py")  # its module imports torch and fastapi
        parsed = _parse_or_raise(parser, list(args))
        args = tuple(parsed.overrides) + ("logger=none",)  # as drl.rewards.server.load_reward composes them
    overrides, multirun = hydra_overrides(args)
    if command.program == "drl-eval" and multirun:
        raise ValueError("drl-eval takes no sweep")
    points = sweep_points(overrides, multirun)
    for point in points:
        (compose_eval if command.program == "drl-eval" else compose_train)(point)
    return len(points)


class _ArgparseError(Exception):
    pass


def _parse_or_raise(parser: argparse.ArgumentParser, args: list[str], known: bool = False) -> argparse.Namespace:
    def error(message):
        raise _ArgparseError(message)

    for p in [parser, *_subparsers(parser)]:
        p.error = error
        p.exit_on_error = False
    try:
        if not known:
            return parser.parse_args(args)
        parsed, rest = parser.parse_known_args(args)
    except argparse.ArgumentError as e:
        raise _ArgparseError(str(e)) from None
    flags = [a for a in rest if a.startswith("-") and a != "--"]
    if flags:
        raise _ArgparseError(f"unrecognized arguments: {' '.join(flags)}")
    return parsed


def _subparsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found += [sub, *_subparsers(sub)]
    return found


class _Anything:
    """Stands for a name the parser's code refers to that is not argparse's (a default, a type, a constant)."""

    def __call__(self, *args, **kwargs):
        return args[0] if args else None

    def __getattr__(self, name):
        return self

    def __contains__(self, item):
        return True

    def __iter__(self):
        return iter(())


class _Names(dict):
    def __missing__(self, key):
        return getattr(builtins, key) if hasattr(builtins, key) else _Anything()


PARSER_CALLS = {"ArgumentParser", "add_subparsers", "add_parser", "add_argument_group", "add_mutually_exclusive_group",
                "add_argument", "set_defaults"}  # fmt: skip


def _call_name(node) -> str:
    if isinstance(node, ast.Call):
        func = node.func
        return func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
    return ""


def _import_stdlib(stmt: ast.Import | ast.ImportFrom, names: dict) -> None:
    if isinstance(stmt, ast.Import):
        for alias in stmt.names:
            if alias.name.split(".")[0] in sys.stdlib_module_names:
                names[(alias.asname or alias.name).split(".")[0]] = importlib.import_module(alias.name.split(".")[0])
    elif stmt.module and stmt.level == 0 and stmt.module.split(".")[0] in sys.stdlib_module_names:
        module = importlib.import_module(stmt.module)
        for alias in stmt.names:
            if hasattr(module, alias.name):
                names[alias.asname or alias.name] = getattr(module, alias.name)


def script_parser(path: Path) -> tuple[argparse.ArgumentParser, bool]:
    """The script's argparse parser, rebuilt from its source without importing it (scripts import torch and
    drl.train at the top): the statements that build the parser, run alone. Also whether the script
    parses with parse_known_args (its extra words go on, e.g. as drl-train overrides)."""
    module = ast.parse(path.read_text())
    names = _Names(argparse=argparse, __doc__=ast.get_docstring(module) or "", __file__=str(path))
    for stmt in module.body:  # the standard library's imports, and module-level constants that are literals
        if isinstance(stmt, (ast.Import, ast.ImportFrom)):
            _import_stdlib(stmt, names)
        elif isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
            try:
                names[stmt.targets[0].id] = ast.literal_eval(stmt.value)
            except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
                pass
    builds = lambda node: any(_call_name(c) == "ArgumentParser" for c in ast.walk(node))  # noqa: E731
    holder = next((n for n in ast.walk(module) if isinstance(n, ast.FunctionDef) and builds(n)), module)
    statements = []
    for stmt in holder.body:
        value = stmt.value if isinstance(stmt, (ast.Assign, ast.Expr)) else None
        if value is not None and _call_name(value) in PARSER_CALLS:
            statements.append(stmt)
    root = next(s.targets[0].id for s in statements if isinstance(s, ast.Assign) and _call_name(s.value) == "ArgumentParser")
    exec(compile(ast.Module(body=statements, type_ignores=[]), str(path), "exec"), names)  # noqa: S102
    known = any(_call_name(c) == "parse_known_args" for c in ast.walk(holder) if isinstance(c, ast.Call))
    return names[root], known


def script_words(args: tuple[str, ...]) -> list[str]:
    """A usage line's words as the shell passes them: optional parts in [brackets] given, '...' dropped."""
    words = []
    for arg in args:
        if re.fullmatch(r"\[?\.\.\.\]?", arg):
            continue
        if arg.startswith("[") and "=" not in arg:
            arg = arg[1:]
            if not arg:
                continue
        if arg.endswith("]") and "=" not in arg and "[" not in arg:
            arg = arg[:-1]
        words.append(arg)
    return words


def check_script_command(command: Command) -> argparse.Namespace:
    path = ROOT / command.program
    if not path.is_file():
        raise FileNotFoundError(f"{command.program} does not exist")
    parser, known = script_parser(path)
    return _parse_or_raise(parser, script_words(command.args), known)


# ---------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def docs_home(tmp_path_factory):
    """A scratch home and working directory holding the config files the pages show."""
    home = tmp_path_factory.mktemp("home")
    for relative, body in config_files().items():
        target = home / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(body)
    return home


@pytest.fixture(scope="module")
def hydra_context(docs_home):
    """One Hydra initialisation for every command of the module (drl-train's and drl-eval's configs live
    in the same conf/), run from the scratch home so that relative file:// search paths resolve there."""
    import os

    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from drl.compose import config_dir
    from drl.config import register_configs

    register_configs()
    GlobalHydra.instance().clear()
    cwd = os.getcwd()
    os.chdir(docs_home)
    try:
        with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
            yield
    finally:
        os.chdir(cwd)
        GlobalHydra.instance().clear()


def _unique(commands: list[Command]) -> list[Command]:
    seen, out = set(), []
    for c in commands:
        if (c.program, c.args) not in seen:
            seen.add((c.program, c.args))
            out.append(c)
    return out


HOME_MARK = "/tmp/drl-docs/home"  # ids are computed before the fixture's directory exists; replaced at run time
DRL_COMMANDS = _unique([c for c in doc_commands(home=HOME_MARK) if c.program in PROGRAMS])
SCRIPT_COMMANDS = _unique([c for c in doc_commands(home=HOME_MARK) if c.program.startswith("scripts/")])


def _at_home(command: Command, home: Path) -> Command:
    return Command(command.program, tuple(a.replace(HOME_MARK, str(home)) for a in command.args), command.where)


# ---------------------------------------------------------------------------------------------- tests


# Commands a page shows failing on purpose, and the sentence it shows for them.
SHOWN_FAILING = {"drl-train train.epochs=-1": "train.epochs=-1 must be > 0."}


@pytest.mark.parametrize("command", DRL_COMMANDS, ids=str)
def test_documented_command_composes_and_validates(command, docs_home, hydra_context):
    shown = SHOWN_FAILING.get(f"{command.program} {shlex.join(command.args)}")
    if shown is None:
        assert check_drl_command(_at_home(command, docs_home)) >= 1
    else:
        with pytest.raises(Exception, match=re.escape(shown)):
            check_drl_command(command)


@pytest.mark.parametrize(
    "overrides",
    [
        ["algorithm=rwr", "seed=3", "+reward.terms.jpeg_compressibility=0.2", "reward.terms.toy_aesthetic=0"],
        ["experiment=hopper_dppo", "model.path=/tmp/p", "env.num_envs=4", "hydra.run.dir=/tmp/r"],
        ["+launcher=slurm", "hydra.launcher.partition=gpu", "hardware=gpu", "seed=2"],
        ["model=sd15", "model.path=/tmp/sd15", "prompts=file", "prompts.path=/tmp/p.txt", "reward.monitor=[toy_alignment]"],
    ],
)
def test_cached_composition_equals_hydras_compose(overrides, hydra_context):
    from hydra import compose as hydra_compose
    from omegaconf import OmegaConf

    assert OmegaConf.to_container(compose("config", overrides)) == OmegaConf.to_container(
        hydra_compose(config_name="config", overrides=overrides)
    )


@pytest.mark.parametrize("command", SCRIPT_COMMANDS, ids=str)
def test_documented_script_command_parses(command):
    check_script_command(command)


def test_the_docs_show_commands_of_every_program():
    programs = {c.program for c in DRL_COMMANDS}
    assert programs == set(PROGRAMS)
    assert len(DRL_COMMANDS) > 80 and len(SCRIPT_COMMANDS) > 10
    pages = {c.where.split(":")[0] for c in DRL_COMMANDS}
    assert "README.md" in pages and "docs/guide/sd15-your-reward.md" in pages


def test_extraction_reads_blocks_inline_code_continuations_and_placeholders():
    page = (
        "Run `drl-train algorithm=rwr` or `drl-train: error: ...` (an error, not a command).\n"
        "```bash\n"
        "PYTHONPATH=~/r drl-train model.path=<bc run> \\\n"
        "  seed=1   # a comment\n"
        "python -m drl.testing.tiny sd15 /tmp/t && drl-train -m seed=0,1 &\n"
        "OMP_NUM_THREADS=1 python scripts/samples_to_reach.py RUN_DIR [RUN_DIR ...] --target 2\n"
        "```\n"
        "```python\n"
        "subprocess.run(['drl-train', 'seed=9'])\n"
        "```\n"
        "```yaml\n"
        "# @package _global_\n"
        "#   drl-eval models=[a]\n"
        "```\n"
    )
    found = [(c.program, c.args) for s in snippets(page) for c in commands_in(s, home="/h")]
    assert found == [
        ("drl-train", ("algorithm=rwr",)),
        ("drl-train", (f"model.path={PLACEHOLDER_RUN}", "seed=1")),
        ("drl-train", ("-m", "seed=0,1")),
        ("scripts/samples_to_reach.py", (PLACEHOLDER_RUN, f"[{PLACEHOLDER_RUN}", "...]", "--target", "2")),
        ("drl-eval", ("models=[a]",)),
    ]


def test_a_sweep_composes_each_point():
    assert sweep_points(["algorithm=rwr,ddpo", "seed=0,1", "+launcher=slurm"], multirun=True) == [
        ["algorithm=rwr", "seed=0", "+launcher=slurm"],
        ["algorithm=rwr", "seed=1", "+launcher=slurm"],
        ["algorithm=ddpo", "seed=0", "+launcher=slurm"],
        ["algorithm=ddpo", "seed=1", "+launcher=slurm"],
    ]


BROKEN = [
    "drl-train algorithm=nope",  # no such option
    "drl-train train.epoch=3",  # no such key
    "drl-train +foo=1",  # a key nothing reads
    "drl-train train.epochs=-1",  # out of range
    "drl-train seed=0,1",  # a sweep without -m
    "drl-train -m algorithm=rwr,nope",  # one point of the sweep is wrong
    "drl-train --config job",  # not a flag
    "drl-train reward=my_judge",  # a user option without its search path
    "drl-eval modelz=[drl:toy_t2i]",
    "drl-eval num_prompts=0",
    "drl-reward-server reward=toy_alignment --hots 0.0.0.0",
    "drl-reward-server reward=nope --port 8000",
]


@pytest.mark.parametrize("text", BROKEN)
def test_a_broken_command_fails(text, docs_home, hydra_context):
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from drl.errors import ConfigError

    (command,) = commands_in(Snippet("broken.md", 1, text))
    with pytest.raises((HydraException, OmegaConfBaseException, ConfigError, _ArgparseError, ValueError)):
        check_drl_command(command)


@pytest.mark.parametrize(
    "text",
    [
        "python scripts/make_dataset.py --env-id Hopper-v5 --outt x.npz",  # a misspelt flag
        "python scripts/sample_grid.py --steps fifty --out g.png",  # a wrong type
        "python scripts/check_identical_metrics.py runn OUT",  # no such subcommand
        "python scripts/bench_alignprop_memory.py --vidoe",  # parse_known_args: still a flag it does not know
        "python scripts/no_such_script.py --help",
    ],
)
def test_a_broken_script_command_fails(text):
    (command,) = commands_in(Snippet("broken.md", 1, text))
    with pytest.raises((_ArgparseError, FileNotFoundError)):
        check_script_command(command)


def conf_comment_commands() -> list[Command]:
    """The commands quoted in the comments of conf/**/*.yaml (an option's header names the command that runs it)."""
    found = []
    for yaml in sorted((ROOT / "conf").rglob("*.yaml")):
        comments = [line.split("#", 1)[1] for line in yaml.read_text().splitlines() if line.lstrip().startswith("#")]
        text = "```bash\n" + "\n".join(comments) + "\n```\n" + "\n".join(comments)  # as lines, and their `spans`
        page = str(yaml.relative_to(ROOT))
        found += [c for s in snippets(text, page) for c in commands_in(s) if c.program in PROGRAMS]
    return found


def test_conf_comments_name_existing_options():
    """conf/'s comments quote commands (`drl-train model=modelscope_t2v ... reward=frames_aesthetic`): every
    group option they name exists. Composing them all would double this module's time; the options are what drifts."""
    commands = conf_comment_commands()
    assert len(commands) > 20
    missing = []
    for command in commands:
        for arg in command.args:
            match = re.fullmatch(r"\+?(\w+)=([\w,]+)", arg)
            if match and match.group(1) in CONFIG_GROUPS:
                for option in match.group(2).split(","):
                    if not (ROOT / "conf" / match.group(1) / f"{option}.yaml").is_file():
                        missing.append(f"{command.where}: {match.group(1)}={option}")
    assert not missing, f"conf/ comments name options that do not exist: {missing}"


def test_script_parser_reads_flags_without_importing_the_script():
    parser, known = script_parser(ROOT / "scripts" / "make_dataset.py")
    args = parser.parse_args(["--env-id", "Hopper-v5", "--out", "x.npz"])
    assert args.env_id == "Hopper-v5" and not known
