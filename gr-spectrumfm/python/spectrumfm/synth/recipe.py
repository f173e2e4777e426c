"""A dataset recipe: everything ``spectrumfm generate`` needs to make the same set again.

A recipe is a versioned YAML (or JSON) mapping; the command-line options of ``spectrumfm
generate`` set the same fields and override a ``--recipe`` file's. Example::

    version: 1
    family: technology           # modulation | technology | sensing | anomaly
    classes: [wifi, lte, nr, ble]
    n_per_class: 2000
    samp_rate: 20e6              # Hz
    length: 1024                 # samples per example
    snr_db: [-10, 20]            # a number, or [lo, hi] drawn uniformly per example
    seed: 1
    shard_size: 4096             # examples per HDF5 shard
    impairments:                 # spectrumfm.synth.impairments.Impairments; all off if absent
      cfo_hz: [-5000, 5000]
      multipath: tdl-b
      delay_spread_ns: 100
      speed_kmh: [0, 30]
    params:                      # fixed generator parameters per class (optional)
      lte: {bandwidth_mhz: 5}

Families and their classes:

* ``modulation`` / ``technology``: ids of :mod:`spectrumfm.synth.modulations` /
  :mod:`spectrumfm.synth.technologies` (all of them when none are named);
* ``sensing``: ``noise`` and signal ids (technology ids, else modulation ids; write
  ``modulation:fm`` for the analog FM rather than broadcast FM); noise examples are
  receiver noise only;
* ``anomaly``: :data:`spectrumfm.synth.anomalies.ANOMALY_CLASSES` (``normal`` first).
"""

from __future__ import annotations

import dataclasses
import json
import math

from spectrumfm.errors import InputError

__all__ = ["Recipe", "GENERATE_FAMILIES", "RECIPE_VERSION", "DEFAULT_RATES"]

RECIPE_VERSION = 1
GENERATE_FAMILIES = ("modulation", "technology", "sensing", "anomaly")
#: The sample rate of a family when none is given (Hz): modulations are defined in samples
#: per symbol, so their rate is nominal; 20 MS/s holds every technology's common variants
#: and the anomaly case's 20 MHz primary.
DEFAULT_RATES = {"modulation": 1e6, "technology": 20e6, "sensing": 20e6, "anomaly": 25e6}
DEFAULT_SNR_RANGE = (-10.0, 20.0)
_SENSING_DEFAULT = ["noise", "wifi", "lte", "nr", "ble", "zigbee", "fm", "lora", "gsm",
                    "modulation:qpsk", "modulation:16qam", "modulation:gmsk"]


@dataclasses.dataclass
class Recipe:
    """The settings of one generated dataset (see the module docstring for the YAML form)."""

    family: str
    classes: list
    n_per_class: int
    samp_rate: float
    length: int
    snr_db: float | None = None
    snr_range: tuple | None = None
    seed: int = 0
    shard_size: int = 4096
    impairments: dict = dataclasses.field(default_factory=dict)
    params: dict = dataclasses.field(default_factory=dict)
    version: int = RECIPE_VERSION

    # -- construction --------------------------------------------------------------------

    @classmethod
    def load(cls, path: str) -> dict:
        """The mapping in a recipe file (YAML or JSON), checked for its version."""
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except FileNotFoundError:
            raise InputError(f"{path}: no such recipe file") from None
        except (OSError, UnicodeError) as e:
            raise InputError(f"{path}: cannot read the recipe ({e})") from None
        try:
            data = load_yaml(text)
        except Exception as e:  # yaml.YAMLError and its many subclasses
            raise InputError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
        if not isinstance(data, dict):
            raise InputError(f"{path}: a recipe is a mapping of settings (family, classes, ...)")
        version = data.pop("version", RECIPE_VERSION)
        if version != RECIPE_VERSION:
            raise InputError(f"{path}: recipe version {version!r}; this spectrumfm reads "
                             f"version {RECIPE_VERSION}")
        known = {f.name for f in dataclasses.fields(cls)} | {"snr_db"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InputError(f"{path}: unknown recipe setting {unknown[0]!r} (known: "
                             f"{', '.join(sorted(known - {'version', 'snr_range'}))})")
        snr = data.pop("snr_db", None)
        if isinstance(snr, (list, tuple)):
            data["snr_range"] = snr
        elif snr is not None:
            data["snr_db"] = snr
        return data

    @classmethod
    def build(cls, settings: dict, where: str = "recipe") -> "Recipe":
        """A checked recipe from a settings mapping (file and command line merged)."""
        s = dict(settings)
        s.pop("version", None)
        if isinstance(s.get("snr_db"), (list, tuple)):  # the file form of a range
            s["snr_range"] = s.pop("snr_db")
        family = s.get("family")
        if family not in GENERATE_FAMILIES:
            raise InputError(f"{where}: unknown family {family!r} (one of "
                             f"{', '.join(GENERATE_FAMILIES)})")
        rate = _number(where, "samp_rate", s.get("samp_rate", DEFAULT_RATES[family]))
        if not (math.isfinite(rate) and rate > 0):
            raise InputError(f"{where}: samp_rate must be a positive number of Hz, got {rate:g}")
        snr_db, snr_range = s.get("snr_db"), s.get("snr_range")
        if snr_db is not None and snr_range is not None:
            raise InputError(f"{where}: give snr_db or snr_range, not both")
        if snr_db is not None:
            snr_db = _number(where, "snr_db", snr_db)
            if not math.isfinite(snr_db):
                raise InputError(f"{where}: snr_db must be finite, got {snr_db}")
        else:
            snr_range = _range(where, "snr_range", snr_range or DEFAULT_SNR_RANGE)
        recipe = cls(family=family, classes=_classes(where, family, s.get("classes")),
                     n_per_class=_count(where, "n_per_class", s.get("n_per_class", 1000)),
                     samp_rate=rate, length=_count(where, "length", s.get("length", 1024)),
                     snr_db=snr_db, snr_range=snr_range,
                     seed=_count(where, "seed", s.get("seed", 0), low=0),
                     shard_size=_count(where, "shard_size", s.get("shard_size", 4096)),
                     impairments=dict(s.get("impairments") or {}),
                     params=dict(s.get("params") or {}))
        recipe.check(where)
        return recipe

    def check(self, where: str) -> None:
        """Refuse what cannot be generated: bad impairments, params, or a rate too low."""
        from spectrumfm.synth.impairments import Impairments
        Impairments.from_dict(self.impairments, where=f"{where}: impairments")
        for name, p in self.params.items():
            if name not in self.classes:
                raise InputError(f"{where}: params for {name!r}, which is not one of the "
                                 f"classes ({', '.join(self.classes)})")
            if not isinstance(p, dict):
                raise InputError(f"{where}: params of {name!r} must be a mapping")
            if self.family != "anomaly":
                spec = (resolve_waveform(name, where) if self.family == "sensing"
                        else core_get(self.family, name))
                spec.check_params(p, where=f"{where}: params of {name!r}")
        if self.family == "anomaly" and any(c.startswith("alias-30") for c in self.classes):
            from spectrumfm.synth.anomalies import ALIAS_30MHZ_MAX_RATE
            if self.samp_rate > ALIAS_30MHZ_MAX_RATE:
                raise InputError(f"{where}: alias-30mhz folds a 30 MHz interferer by sampling "
                                 f"below its width; use at most "
                                 f"{ALIAS_30MHZ_MAX_RATE / 1e6:g} MS/s")
        for name in self.classes:
            need = min_rate(self.family, name)
            if self.samp_rate < need:
                raise InputError(f"{where}: {name} needs a sample rate of at least "
                                 f"{need / 1e6:g} MS/s for its bandwidth; samp_rate is "
                                 f"{self.samp_rate / 1e6:g} MS/s")

    def to_dict(self) -> dict:
        d = {"version": self.version, "family": self.family, "classes": list(self.classes),
             "n_per_class": self.n_per_class, "samp_rate": self.samp_rate,
             "length": self.length,
             "snr_db": self.snr_db if self.snr_db is not None else list(self.snr_range),
             "seed": self.seed, "shard_size": self.shard_size,
             "impairments": self.impairments, "params": self.params}
        return json.loads(json.dumps(d))  # plain JSON types throughout


def load_yaml(text: str):
    """YAML with numbers as people write them in recipes: PyYAML follows YAML 1.1, where
    ``20e6`` and ``2.4e9`` are strings (it wants ``2.4e+9``); YAML 1.2 reads them as floats,
    and so does this loader."""
    import re

    import yaml

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_implicit_resolver(
        "tag:yaml.org,2002:float",
        re.compile(r"""^[-+]?(?:[0-9][0-9_]*\.?[0-9_]*|\.[0-9_]+)[eE][-+]?[0-9]+$"""),
        list("-+0123456789."))
    return yaml.load(text, Loader=Loader)  # noqa: S506 (a SafeLoader subclass)


# -- checks ------------------------------------------------------------------------------

def _number(where, key, value) -> float:
    try:
        if isinstance(value, bool):
            raise TypeError
        return float(value)
    except (TypeError, ValueError):
        raise InputError(f"{where}: {key} must be a number, got {value!r}") from None


def _count(where, key, value, low: int = 1) -> int:
    v = _number(where, key, value)
    if v != int(v) or v < low:
        raise InputError(f"{where}: {key} must be a whole number >= {low}, got {value!r}")
    return int(v)


def _range(where, key, value) -> tuple:
    if isinstance(value, str):
        value = value.split(",")
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise InputError(f"{where}: {key} must be LO,HI, got {value!r}")
    lo, hi = (_number(where, key, v) for v in value)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise InputError(f"{where}: {key} must be finite, got {lo:g},{hi:g}")
    if lo > hi:
        raise InputError(f"{where}: {key} {lo:g},{hi:g} is upside down (LO must not exceed HI)")
    return (lo, hi)


def _classes(where, family, value) -> list:
    if value is None or value == "" or value == []:
        return default_classes(family)
    if isinstance(value, str):
        value = [c.strip() for c in value.split(",") if c.strip()]
    if not isinstance(value, (list, tuple)) or not all(isinstance(c, str) for c in value):
        raise InputError(f"{where}: classes must be a list of ids, got {value!r}")
    known = default_classes(family) if family != "sensing" else None
    for c in value:
        if family == "sensing":
            if c != "noise":
                resolve_waveform(c, where)
        elif c not in known:
            raise InputError(f"{where}: unknown {family} class id {c!r} (one of "
                             f"{', '.join(known)})")
    dupes = sorted({c for c in value if value.count(c) > 1})
    if dupes:
        raise InputError(f"{where}: class {dupes[0]!r} named twice")
    return list(value)


def default_classes(family: str) -> list:
    from spectrumfm.synth import core
    if family == "anomaly":
        from spectrumfm.synth.anomalies import ANOMALY_CLASSES
        return list(ANOMALY_CLASSES)
    if family == "sensing":
        return list(_SENSING_DEFAULT)
    return core.names(family)


def resolve_waveform(name: str, where: str = "classes"):
    """The :class:`~spectrumfm.synth.core.WaveformSpec` a class id names: ``family:id``, or a
    technology id, else a modulation id."""
    from spectrumfm.synth import core
    fam, sep, wid = name.partition(":")
    if sep:
        return core.get(fam, wid)
    for fam in ("technology", "modulation"):
        if name in core.names(fam):
            return core.get(fam, name)
    raise InputError(f"{where}: unknown signal id {name!r} (technologies: "
                     f"{', '.join(core.names('technology'))}; modulations: "
                     f"{', '.join(core.names('modulation'))})")


def core_get(family: str, name: str):
    from spectrumfm.synth import core
    return core.get(family, name)


def min_rate(family: str, name: str) -> float:
    """The lowest sample rate (Hz) class ``name`` of ``family`` can be generated at."""
    from spectrumfm.synth import core
    if family == "anomaly":
        from spectrumfm.synth.anomalies import ANOMALY_MIN_RATE
        return float(ANOMALY_MIN_RATE)
    if family == "sensing":
        return 0.0 if name == "noise" else resolve_waveform(name).min_rate
    return core.get(family, name).min_rate
