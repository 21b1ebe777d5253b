"""How far the EMA generator has come: whether it has left the generator it started from behind.

The EMA of G's weights with decay d averages over a horizon of 1 / (1 − d) steps: after s steps the
generator it started from (the initial one, or G at ``train.ema.start``) still weighs d^s in it. Below
:data:`EMA_HORIZONS` horizons (d^s > 5 %) the EMA generator lags the raw one: after 300 steps at
d = 0.999 it is 74 % its initial weights and draws noise while the raw generator draws digits. The
raw generator is then the one worth looking at; training's grids, ``gnbench sample`` and the
benchmark's sample panels show both.
"""

from __future__ import annotations

from gn_plugin.config import EmaConfig

#: horizons the EMA must have averaged before its samples and scores are taken at face value
EMA_HORIZONS = 3


def ema_horizon(decay: float) -> float:
    """Steps the EMA averages over: 1 / (1 − decay)."""
    return 1.0 / (1.0 - decay)


def ema_lags(step: int, ema: EmaConfig) -> bool:
    """Whether at ``step`` the EMA generator has averaged fewer than :data:`EMA_HORIZONS` horizons.

    Before ``ema.start`` the EMA is a copy of G and lags nothing.
    """
    return step > ema.start and step - ema.start < EMA_HORIZONS * ema_horizon(ema.decay)


def meaningful_generator(step: int, ema: EmaConfig) -> str:
    """``raw`` while the EMA lags (:func:`ema_lags`), else ``ema``."""
    return "raw" if ema_lags(step, ema) else "ema"


def ema_note(step: int, ema: EmaConfig) -> str | None:
    """One line saying that the EMA generator lags at ``step`` and until when; None when it does not."""
    if not ema_lags(step, ema):
        return None
    horizon = ema_horizon(ema.decay)
    averaged = step - ema.start
    warm_at = ema.start + round(EMA_HORIZONS * horizon)
    return (
        f"at step {step} the EMA generator has averaged {averaged / horizon:.2g} of the {EMA_HORIZONS} EMA horizons "
        f"(1 / (1 - {ema.decay:g}) = {horizon:.0f} steps) it needs, and is still "
        f"{ema.decay ** averaged:.0%} the generator of step {ema.start}: its samples and scores lag the raw "
        f"generator's until step {warm_at}, so look at the raw one"
    )
