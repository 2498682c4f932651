"""Seeded synthetic recordings of the 11 DVS128 Gesture classes, from a DVS sensor model.

A person (head, neck, torso, shoulders, legs, upper arms, forearms, palms, fingers and
thumbs; every part a thick anti-aliased capsule with cylinder shading, clothes plain, striped
or printed) is rendered as an intensity image over a textured background, at ``render_hz``
frames per second, at a scale of 0.6-1.4x of a mid framing. The arms follow a seeded gesture
schedule: shuffled rounds of all 11 classes, each gesture with a random speed, amplitude and
phase; between them, still gaps and no-gesture scenes (:data:`SCENES`: walking, sitting
down, a second person passing behind, an object moved by hand, camera pan and shake, lamp
flicker, an empty scene, ...). The camera's own motion shifts the whole image (background
included); lamp flicker multiplies the illumination.

Events come from a pixel model, never from drawn dots. Per pixel:

- log intensity ``L = log(I)``, linear in time between two rendered frames;
- a reference level ``ref``; an ON event when ``L - ref >= C_on``, an OFF event when
  ``ref - L >= C_off`` (``C`` drawn per pixel, mean 0.2, sigma 0.03: threshold mismatch);
  several events when several thresholds are crossed, each at the linearly interpolated
  crossing time, with ``ref`` moving one threshold per event;
- a refractory period: no event within ``refractory_us`` of the previous one of the same
  pixel. An event delayed by it fires when the period ends and resets ``ref`` to the log
  intensity at that moment (the excess is lost, as in a real pixel);
- background activity: Poisson noise events at ``noise_hz`` per pixel, and a few hot pixels
  firing at 50-300 Hz. Noise goes through the same refractory check, so every event of
  every pixel (hot pixels included) is at least ``refractory_us`` after the previous one.

Conventions: the person faces the camera, so the subject's right arm is on the left of the
image (small x). Clockwise / counter-clockwise are as seen in the image (x right, y down).
Pixel centres are at integer coordinates; y = 0 is the top row.

Only the tiles (4x4 pixels) near a moving body part are re-rendered each frame (numba), so
idle gaps cost almost nothing and a moving arm costs a few thousand pixels per frame; a
camera motion re-renders every tile, a flicker re-checks every pixel.

Everything random comes from ``SynthConfig.seed`` through independent streams (schedule,
person, sensor, noise), so a recording is a pure function of its config: the same seed gives
identical events and labels, whatever packet size the consumer asks for.

Example:
    >>> cfg = SynthConfig(sensor_size=(128, 128), seconds=10.0, seed=3)
    >>> gen = SyntheticGestures(cfg)
    >>> gen.labels  # known up front
    >>> for packet in gen.packets(packet_us=1000):  # streams, 1 ms per packet
    ...     ...
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numba
import numpy as np
import numpy.typing as npt

from smastream.gestures import NUM_CLASSES
from smastream.stream.events import EVENT_DTYPE, Events
from smastream.stream.formats.labels import GestureWindow, SceneSegment

__all__ = ["SCENES", "SceneSegment", "SynthConfig", "SyntheticGestures", "generate"]

FloatArray = npt.NDArray[np.float64]

# ---------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SynthConfig:
    """Everything that defines a synthetic recording (a recording is a pure function of it).

    Attributes:
        sensor_size: ``(width, height)``; resolve names with
            :func:`smastream.stream.events.sensor_size`. The person scales with it.
        seconds: Duration of the recording.
        seed: Seed of every random choice (schedule, person, sensor mismatch, noise).
        gesture_s: ``(min, max)`` duration of one gesture, seconds.
        gap_s: ``(min, max)`` idle gap before each gesture, seconds (the recording starts
            with one).
        threshold_on: Mean ON contrast threshold (log intensity).
        threshold_off: Mean OFF contrast threshold (log intensity).
        threshold_sigma: Per-pixel standard deviation of both thresholds (mismatch).
        threshold_noise: Temporal noise of the thresholds: each pixel's thresholds are
            multiplied by ``exp(U(-1, 1) * 1.73 * threshold_noise)`` (log s.d.
            ``threshold_noise``), drawn per pixel and rendered frame.
        refractory_us: Minimum time between two events of one pixel, >= 1 (real DVS128
            pixels re-fire within about 1 µs).
        burst_prob: Chance that a pixel's first event of a frame is doubled one refractory
            period later (real DVS128 pixels often fire such pairs).
        latency_us: Mean pixel latency (exponential, drawn per pixel and frame) at a mid-grey
            intensity; dark pixels are slower (the pixel bandwidth falls with light).
        noise_hz: Background-activity noise rate per pixel.
        n_hot_pixels: Number of hot pixels.
        hot_pixel_hz: ``(min, max)`` rate of a hot pixel.
        render_hz: Rendered frames per second; timestamps are interpolated inside frames.
        t0_us: Timestamp of the start of the recording.
        no_gesture_share: Target share of the time outside gesture windows (idle gaps plus
            no-gesture scenes, see :data:`SCENES`), 0 <= share < 0.9. Scenes are added
            between the gestures until the share is reached; 0 or a share the gaps alone
            already reach adds none.
        scene_weights: ``((name, factor), ...)``: multiply the draw weight of these scenes
            (:data:`SCENES`) by ``factor`` >= 0, e.g. ``(("scratch", 3.0),)`` for training
            data rich in the scenes a model confuses with gestures; empty (the default):
            the standard mix.
    """

    sensor_size: tuple[int, int] = (128, 128)
    seconds: float = 60.0
    seed: int = 0
    gesture_s: tuple[float, float] = (2.0, 5.0)
    gap_s: tuple[float, float] = (0.5, 1.5)
    threshold_on: float = 0.25
    threshold_off: float = 0.25
    threshold_sigma: float = 0.08
    threshold_noise: float = 0.2
    refractory_us: int = 1
    latency_us: float = 3000.0
    burst_prob: float = 0.04
    noise_hz: float = 0.03
    n_hot_pixels: int = 3
    hot_pixel_hz: tuple[float, float] = (50.0, 300.0)
    render_hz: float = 1000.0
    t0_us: int = 0
    no_gesture_share: float = 0.45
    scene_weights: tuple[tuple[str, float], ...] = ()

    def __post_init__(self) -> None:
        w, h = (int(v) for v in self.sensor_size)
        if not (16 <= w <= 65535 and 16 <= h <= 65535):
            raise ValueError(f"sensor_size {self.sensor_size!r}: both sides must be 16..65535")
        object.__setattr__(self, "sensor_size", (w, h))
        if not (math.isfinite(self.seconds) and self.seconds > 0):
            raise ValueError(f"seconds must be a positive number, got {self.seconds!r}")
        for name in ("gesture_s", "gap_s", "hot_pixel_hz"):
            lo, hi = getattr(self, name)
            low_ok = lo > 0 if name == "gesture_s" else lo >= 0
            if not (low_ok and math.isfinite(hi) and lo <= hi):
                need = "0 < min" if name == "gesture_s" else "0 <= min"
                raise ValueError(f"{name} must be (min, max) with {need} <= max, got {(lo, hi)}")
            object.__setattr__(self, name, (float(lo), float(hi)))
        for name in ("threshold_on", "threshold_off"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")
        if not self.threshold_sigma >= 0:
            raise ValueError(f"threshold_sigma must be >= 0, got {self.threshold_sigma!r}")
        if not (math.isfinite(self.threshold_noise) and 0 <= self.threshold_noise <= 2):
            raise ValueError(f"threshold_noise must be in 0..2, got {self.threshold_noise!r}")
        if int(self.refractory_us) < 1:
            raise ValueError(f"refractory_us must be >= 1, got {self.refractory_us!r}")
        if not (math.isfinite(self.latency_us) and self.latency_us >= 0):
            raise ValueError(f"latency_us must be >= 0, got {self.latency_us!r}")
        if not 0 <= self.burst_prob <= 1:
            raise ValueError(f"burst_prob must be in 0..1, got {self.burst_prob!r}")
        if not self.noise_hz >= 0:
            raise ValueError(f"noise_hz must be >= 0, got {self.noise_hz!r}")
        if int(self.n_hot_pixels) < 0:
            raise ValueError(f"n_hot_pixels must be >= 0, got {self.n_hot_pixels!r}")
        if not 50 <= self.render_hz <= 100_000:
            raise ValueError(f"render_hz must be in 50..100000, got {self.render_hz!r}")
        if not 0 <= self.no_gesture_share < 0.9:
            raise ValueError(f"no_gesture_share must be in [0, 0.9), got {self.no_gesture_share!r}")
        if int(self.t0_us) < 0:
            raise ValueError(f"t0_us must be >= 0, got {self.t0_us!r}")
        weights = tuple((str(n), float(f)) for n, f in self.scene_weights)
        object.__setattr__(self, "scene_weights", weights)
        for name, factor in weights:
            if name not in SCENES:
                raise ValueError(f"scene_weights: unknown scene {name!r}; valid: {SCENES}")
            if not (math.isfinite(factor) and factor >= 0):
                raise ValueError(f"scene_weights: {name} factor must be >= 0, got {factor!r}")
        _scene_probabilities(weights)

    @property
    def duration_us(self) -> int:
        return round(self.seconds * 1e6)


# ---------------------------------------------------------------------------------------
# Body geometry (units: body units ``u``, origin at the neck, x right, y down)
# ---------------------------------------------------------------------------------------

DEMO_SEEDS = (7, 8)
"""Seeds used for the shipped demo recordings; keep them out of training data."""

SHOULDER_X = 0.17
SHOULDER_Y = 0.03
UPPER_ARM = 0.19
FOREARM = 0.18
REACH = UPPER_ARM + FOREARM
REST_SPREAD = 0.12  # rad between a hanging arm and vertical

# Parts of the subject (0..15, indices kept stable), then of a second person who passes
# behind (16..21) and a hand-held object (22). :data:`_PAINT` is the painting order (later
# parts are drawn over earlier ones): the second person first, the object last.
_PART_NAMES = (
    "leg_r", "leg_l", "torso", "shoulders", "neck", "head",
    "upper_r", "fore_r", "hand_r", "upper_l", "fore_l", "hand_l",
    "fingers_r", "thumb_r", "fingers_l", "thumb_l",
    "p2_leg_r", "p2_leg_l", "p2_torso", "p2_head", "p2_arm_r", "p2_arm_l",
    "object",
)  # fmt: skip
N_PARTS = len(_PART_NAMES)
N_BODY = 16
_P2 = slice(16, 22)
_OBJECT = 22
_RADII = np.array(
    [0.07, 0.07, 0.14, 0.06, 0.045, 0.085, 0.045, 0.038, 0.042, 0.045, 0.038, 0.042,
     0.022, 0.014, 0.022, 0.014]
)  # fmt: skip
_PAINT = np.array([*range(16, 22), *range(N_BODY), _OBJECT])
_OFF = -1.0e4
"""Coordinate of a part that is not in the scene (far outside any sensor, radius 0)."""

# Base frequency (Hz) of each class's main motion.
_BASE_HZ = (2.0, 2.2, 2.2, 0.9, 0.9, 0.9, 0.9, 1.6, 2.5, 3.0, 0.6)


@dataclass(frozen=True)
class _Person:
    """Where the person stands and what it looks like (pixels)."""

    neck_x: float
    neck_y: float
    unit_px: float
    albedo: FloatArray  # [N_PARTS]


@dataclass(frozen=True)
class _Gesture:
    """One scheduled gesture and its random parameters."""

    window: GestureWindow  # times relative to the start of the recording (no t0)
    speed: float  # frequency multiplier
    amp: float  # amplitude multiplier
    phase: float  # rad
    direction: float  # +1 or -1, where a class has a free sense
    extra: FloatArray  # [16] uniform(0, 1) numbers for class-specific choices


SCENES = (
    "sway", "walk", "sit_stand", "head_turn", "scratch", "reach_object", "shake", "leave_empty",
    "pass_behind", "pan", "flicker",
)  # fmt: skip
"""No-gesture scenes mixed between the gestures (``idle`` is the still gap itself):
swaying; walking sideways and back; sitting down and standing up (the body drops and
rises); turning the head; scratching the head or face with one hand; picking up an object
(a mug, a phone or a box, drawn) low at one side and moving it across to the other;
camera shake (the whole image shakes, background included); walking out of the frame, an
empty scene with only sensor noise, and back; a second, farther person walking across
behind the subject; a camera pan there and back; lamp flicker at 100 or 120 Hz (the
subject stands still)."""


_SCENE_W = np.array(
    [0.3 if name in ("leave_empty", "pan") else 0.6 if name == "flicker" else 1.0
     for name in SCENES]
)  # fmt: skip
"""Scene draw weights: leaving the frame and a pan sweep every pixel, so they are drawn
less often (still stretches, to an event camera, are already scenes with only sensor
noise); flicker costs a full-frame render per frame."""


def _scene_probabilities(factors: tuple[tuple[str, float], ...]) -> FloatArray:
    """Draw probabilities of :data:`SCENES`: :data:`_SCENE_W` times ``factors`` (see
    :attr:`SynthConfig.scene_weights`), normalised.

    Raises:
        ValueError: every weight is 0.
    """
    w = _SCENE_W.copy()
    for name, factor in factors:
        w[SCENES.index(name)] *= factor
    total = float(w.sum())
    if total <= 0:
        raise ValueError("scene_weights: every scene's weight is 0")
    return w / total


@dataclass(frozen=True)
class _Scene:
    segment: SceneSegment  # times relative to the start of the recording (no t0)
    extra: FloatArray  # [8] uniform(0, 1) numbers


def _scene_targets(
    name: str, s: FloatArray, dur: float, e: FloatArray
) -> tuple[FloatArray | None, FloatArray | None, FloatArray, FloatArray]:
    """Hand targets (or ``None``: arms at rest), body offset ``[n, 2]`` and head shift ``[n]``
    of a no-gesture scene at times ``s`` (seconds into it); body units."""
    n = s.shape[0]
    off = np.zeros((n, 2))
    head = np.zeros(n)
    tau = 2.0 * math.pi
    side = -1.0 if e[0] < 0.5 else 1.0
    if name == "sway":
        f = 0.3 + 0.5 * e[1]
        off[:, 0] = (0.03 + 0.06 * e[2]) * np.sin(tau * f * s + tau * e[3])
        off[:, 1] = 0.01 * np.sin(2 * tau * f * s)
        return None, None, off, head
    if name in ("walk", "leave_empty"):
        dist = (0.25 + 0.35 * e[1]) if name == "walk" else 1.15
        go = _envelope(s, dur, dur * 0.4)
        off[:, 0] = side * dist * go
        off[:, 1] = 0.012 * np.abs(np.sin(tau * (1.6 + 0.4 * e[2]) * s)) * (go > 0.02)
        return None, None, off, head
    if name == "sit_stand":
        off[:, 1] = (0.2 + 0.25 * e[1]) * _envelope(s, dur, dur * 0.35)
        return None, None, off, head
    if name == "head_turn":
        head[:] = (0.015 + 0.02 * e[1]) * np.sin(tau * (0.3 + 0.4 * e[2]) * s) * side
        return None, None, off, head
    if name == "scratch":
        f = 3.0 + 2.0 * e[1]
        tgt = np.stack(
            [side * (0.06 + 0.03 * e[2]) + 0.012 * np.sin(tau * f * s),
             -0.13 + 0.08 * e[3] + 0.01 * np.cos(tau * f * s)], -1,
        )  # fmt: skip
        return (tgt, None, off, head) if side < 0 else (None, tgt, off, head)
    if name == "reach_object":
        z = _smoothstep(s / dur * 1.6 - 0.3)
        a = np.array([side * (0.25 + 0.05 * e[1]), 0.42])
        b = np.array([-side * (0.05 + 0.1 * e[2]), 0.25 + 0.1 * e[3]])
        tgt = a[None, :] * (1 - z[:, None]) + b[None, :] * z[:, None]
        return (tgt, None, off, head) if side < 0 else (None, tgt, off, head)
    if name in ("shake", "pan", "pass_behind", "flicker"):  # the subject stands still
        return None, None, off, head
    raise ValueError(f"unknown scene {name!r}")


def _camera_shift(name: str, s: FloatArray, dur: float, e: FloatArray) -> FloatArray:
    """Image shift ``[n, 2]`` (in units of the sensor's smaller side) that the camera's own
    motion gives everything in view during a scene, background included."""
    n = s.shape[0]
    out = np.zeros((n, 2))
    tau = 2.0 * math.pi
    if name == "shake":
        f1, f2 = 5.0 + 6.0 * e[1], 4.0 + 5.0 * e[2]
        amp = 0.006 + 0.014 * e[3]
        env = _envelope(s, dur, min(0.3, dur / 4))
        out[:, 0] = env * amp * np.sin(tau * f1 * s + tau * e[4])
        out[:, 1] = env * amp * np.sin(tau * f2 * s + tau * e[5])
    elif name == "pan":
        side = -1.0 if e[0] < 0.5 else 1.0
        go = _envelope(s, dur, dur * 0.4)
        out[:, 0] = side * (0.08 + 0.14 * e[1]) * go
        out[:, 1] = (e[2] - 0.5) * 0.06 * go
    return out


def _smoothstep(z: FloatArray) -> FloatArray:
    z = np.clip(z, 0.0, 1.0)
    return z * z * (3.0 - 2.0 * z)


def _envelope(s: FloatArray, dur: float, ramp: float) -> FloatArray:
    """0 at both ends of a stretch of ``dur`` seconds, 1 inside: smoothsteps of ``ramp`` s."""
    return _smoothstep(s / ramp) * _smoothstep((dur - s) / ramp)


def _rest_hands() -> tuple[FloatArray, FloatArray]:
    """Hand positions of straight, hanging arms (body units)."""
    r = np.array([-SHOULDER_X, SHOULDER_Y]) + REACH * np.array(
        [math.cos(math.pi / 2 + REST_SPREAD), math.sin(math.pi / 2 + REST_SPREAD)]
    )
    return r, r * np.array([-1.0, 1.0])


def _gesture_targets(
    label: int, s: FloatArray, g: _Gesture
) -> tuple[FloatArray, FloatArray, float, float, FloatArray]:
    """Hand targets of one class at times ``s`` (seconds into the gesture), before blending.

    Returns:
        ``(right [n, 2], left [n, 2], bend_right, bend_left, body_offset [n, 2])`` in body
        units; the bends pick the elbow side of the two-link inverse kinematics.
    """
    n = s.shape[0]
    f = _BASE_HZ[label] * g.speed
    w = 2.0 * math.pi * f * s + g.phase
    a = g.amp
    zero = np.zeros((n, 2))
    _, rest_l = _rest_hands()
    sh_r = np.array([-SHOULDER_X, SHOULDER_Y])

    def col(x: FloatArray | float, y: FloatArray | float) -> FloatArray:
        return np.stack(np.broadcast_arrays(np.asarray(x, float), np.asarray(y, float)), -1)

    def mirror(
        out: tuple[FloatArray, FloatArray, float, float, FloatArray],
    ) -> tuple[FloatArray, FloatArray, float, float, FloatArray]:
        r, left, br, bl, off = out
        flip = np.array([-1.0, 1.0])
        return left * flip, r * flip, -bl, -br, off * flip

    if label == 0:  # hand clap: hands meet in front of the chest, again and again
        sep = 0.045 + 0.012 + a * 0.13 * (0.5 + 0.5 * np.cos(w))
        y = 0.17 + 0.04 * (g.extra[0] - 0.5) + 0.01 * np.sin(w)
        return col(-sep, y), col(sep, y), 1.0, -1.0, zero
    if label in (1, 2):  # hand wave: forearm up, swinging left-right, elbow out
        elbow = sh_r + UPPER_ARM * np.array([math.cos(math.pi - 0.95), math.sin(math.pi - 0.95)])
        phi = (0.45 + 0.15 * a) * np.sin(w) - 0.1
        hand = col(elbow[0] + FOREARM * np.sin(phi), elbow[1] - FOREARM * np.cos(phi))
        out = (hand, np.broadcast_to(rest_l, (n, 2)).copy(), -1.0, -1.0, zero)
        return out if label == 1 else mirror(out)
    if label in (3, 4, 5, 6):  # arm circles in the image plane, around the shoulder
        # Right arm: clockwise = angle increasing (y down). Left arm = mirrored right arm of
        # the opposite sense.
        sense = 1.0 if label in (3, 6) else -1.0
        theta = math.pi / 2 + REST_SPREAD + sense * (2.0 * math.pi * f * s)
        radius = REACH * (0.8 + 0.2 * min(a, 1.0))
        centre = sh_r + np.array([-0.03, 0.0])
        hand = col(centre[0] + radius * np.cos(theta), centre[1] + radius * np.sin(theta))
        out = (hand, np.broadcast_to(rest_l, (n, 2)).copy(), 1.0, -1.0, zero)
        return out if label in (3, 4) else mirror(out)
    if label == 7:  # arm roll: forearms roll around each other in front of the chest
        theta = g.direction * w
        cx, cy = 0.0, 0.2 + 0.04 * (g.extra[0] - 0.5)
        rx, ry = 0.05 * a, 0.08 * a
        r = col(cx - 0.03 + rx * np.cos(theta), cy + ry * np.sin(theta))
        left = col(cx + 0.03 - rx * np.cos(theta), cy - ry * np.sin(theta))
        return r, left, 1.0, -1.0, zero
    if label == 8:  # air drums: hands strike alternately up and down

        def strike(phase: FloatArray) -> FloatArray:
            v = np.sin(phase)
            return np.sign(v) * np.abs(v) ** 0.6

        y0 = 0.24 + 0.04 * (g.extra[0] - 0.5)
        amp = 0.075 * a
        x0 = 0.12 + 0.03 * g.extra[1]
        hand_r = col(-x0, y0 + amp * strike(w))
        return hand_r, col(x0, y0 + amp * strike(w + np.pi)), 1.0, -1.0, zero
    if label == 9:  # air guitar: right hand strums at the hip, left hand still up on the neck
        strum = col(-0.06 + 0.015 * np.sin(0.5 * w), 0.37 + 0.06 * a * np.sin(w))
        neck_x = 0.34 + 0.03 * g.extra[0] + 0.015 * np.sin(2.0 * math.pi * 0.4 * s)
        fret = col(neck_x, -0.04 + 0.03 * (g.extra[1] - 0.5) + 0.0 * s)
        out = (strum, fret, 1.0, 1.0, zero)
        return out if g.extra[2] < 0.8 else mirror(out)
    if label == 10:  # other: smooth random motion of both hands and a sway of the body
        e = g.extra
        base_r = np.array([-0.16 + 0.1 * e[0], 0.2 + 0.15 * e[1]])
        base_l = np.array([0.16 - 0.1 * e[2], 0.2 + 0.15 * e[3]])
        hands = []
        for k, base in enumerate((base_r, base_l)):
            xy = np.broadcast_to(base, (n, 2)).copy()
            for j in range(2):
                i = 4 + 4 * k + 2 * j
                fx = f * (0.5 + 2.0 * e[i])
                xy[:, 0] += a * 0.08 * np.sin(2 * math.pi * fx * s + 6.3 * e[i + 1])
                xy[:, 1] += a * 0.08 * np.cos(2 * math.pi * fx * 0.7 * s + 6.3 * e[i])
            hands.append(xy)
        sway = col(0.03 * a * np.sin(2 * math.pi * 0.5 * f * s + g.phase), 0.0 * s)
        return hands[0], hands[1], 1.0, -1.0, sway
    raise ValueError(f"label {label} outside 0..{NUM_CLASSES - 1}")


def _ik(shoulder: FloatArray, target: FloatArray, bend: float) -> tuple[FloatArray, FloatArray]:
    """Two-link inverse kinematics: ``(elbow [n, 2], hand [n, 2])`` reaching for ``target``."""
    d = target - shoulder
    dist = np.hypot(d[:, 0], d[:, 1])
    dist = np.clip(dist, abs(UPPER_ARM - FOREARM) + 1e-6, REACH)
    base = np.arctan2(d[:, 1], d[:, 0])
    cos_a = (UPPER_ARM**2 + dist**2 - FOREARM**2) / (2.0 * UPPER_ARM * dist)
    alpha = np.arccos(np.clip(cos_a, -1.0, 1.0))
    a1 = base + bend * alpha
    elbow = shoulder + UPPER_ARM * np.stack([np.cos(a1), np.sin(a1)], -1)
    hand = shoulder + dist[:, None] * np.stack([np.cos(base), np.sin(base)], -1)
    return elbow, hand


def _body_capsules(
    neck: FloatArray,
    hand_r: FloatArray,
    hand_l: FloatArray,
    bend_r: FloatArray,
    bend_l: FloatArray,
) -> FloatArray:
    """Capsules ``[n, N_PARTS, 5]`` (x0, y0, x1, y1, radius) in body units."""
    n = neck.shape[0]
    caps = np.empty((n, N_BODY, 5))
    caps[:, :, 4] = _RADII

    def seg(k: int, a: FloatArray, b: FloatArray) -> None:
        caps[:, k, 0:2] = a
        caps[:, k, 2:4] = b

    o = neck
    v = np.array
    seg(0, o + v([-0.07, 0.45]), o + v([-0.09, 1.0]))
    seg(1, o + v([0.07, 0.45]), o + v([0.09, 1.0]))
    seg(2, o + v([0.0, 0.12]), o + v([0.0, 0.38]))
    seg(3, o + v([-SHOULDER_X, SHOULDER_Y]), o + v([SHOULDER_X, SHOULDER_Y]))
    seg(4, o + v([0.0, -0.05]), o + v([0.0, 0.04]))
    seg(5, o + v([0.0, -0.15]), o + v([0.0, -0.11]))
    for k0, sx, target, bend in ((6, -1.0, hand_r, bend_r), (9, 1.0, hand_l, bend_l)):
        sh = o + v([sx * SHOULDER_X, SHOULDER_Y])
        elbow = np.empty((n, 2))
        hand = np.empty((n, 2))
        for b in np.unique(bend):
            m = bend == b
            elbow[m], hand[m] = _ik(sh[m], target[m], float(b))
        seg(k0, sh, elbow)
        seg(k0 + 1, elbow, hand)
        direction = (hand - elbow) / FOREARM
        seg(k0 + 2, hand, hand + 0.03 * direction)  # palm
        kf = 12 if k0 == 6 else 14
        seg(kf, hand + 0.045 * direction, hand + 0.085 * direction)  # fingers, side by side
        # Thumb: off the palm towards the body's midline (+x for the right hand).
        c, sn = math.cos(0.9), math.sin(0.9) * (1.0 if k0 == 6 else -1.0)
        thumb = np.stack(
            [
                c * direction[:, 0] - sn * direction[:, 1],
                sn * direction[:, 0] + c * direction[:, 1],
            ],
            -1,
        )
        seg(kf + 1, hand + 0.02 * thumb, hand + 0.055 * thumb)
    return caps


# ---------------------------------------------------------------------------------------
# Sensor model (numba)
# ---------------------------------------------------------------------------------------

TILE = 4
MAX_BURST = 12
"""Most events one pixel fires in one rendered frame (the rest of a larger change is lost)."""
_NEVER = -(1 << 62)


@numba.njit(cache=True, nogil=True, inline="always")
def _intensity(
    x: int,
    y: int,
    caps: np.ndarray,
    albedo: np.ndarray,
    bg: np.ndarray,
    tex: np.ndarray,
    which: np.ndarray,
    n_which: int,
    sx: float,
    sy: float,
    margin: int,
) -> float:
    """Scene intensity at pixel centre (x, y): background, then the capsules
    ``which[:n_which]`` (indices into ``caps``, ascending = painting order).

    ``bg`` and ``tex`` have ``margin`` extra pixels on every side; the camera's image shift
    ``(sx, sy)`` moves them under the sensor (bilinear; the capsules come shifted)."""
    bx = min(max(x - sx + margin, 0.0), bg.shape[1] - 1.001)
    by = min(max(y - sy + margin, 0.0), bg.shape[0] - 1.001)
    ix = int(bx)
    iy = int(by)
    fx = bx - ix
    fy = by - iy
    if fx == 0.0 and fy == 0.0:
        val = float(bg[iy, ix])
        t = float(tex[iy, ix])
    else:
        w00 = (1.0 - fx) * (1.0 - fy)
        w01 = fx * (1.0 - fy)
        w10 = (1.0 - fx) * fy
        w11 = fx * fy
        val = (
            w00 * bg[iy, ix]
            + w01 * bg[iy, ix + 1]
            + w10 * bg[iy + 1, ix]
            + w11 * bg[iy + 1, ix + 1]
        )
        t = (
            w00 * tex[iy, ix]
            + w01 * tex[iy, ix + 1]
            + w10 * tex[iy + 1, ix]
            + w11 * tex[iy + 1, ix + 1]
        )
    px = float(x)
    py = float(y)
    for i in range(n_which):
        k = which[i]
        x0 = caps[k, 0]
        y0 = caps[k, 1]
        x1 = caps[k, 2]
        y1 = caps[k, 3]
        r = caps[k, 4]
        if px < min(x0, x1) - r - 1.0 or px > max(x0, x1) + r + 1.0:
            continue
        if py < min(y0, y1) - r - 1.0 or py > max(y0, y1) + r + 1.0:
            continue
        dx = x1 - x0
        dy = y1 - y0
        ll = dx * dx + dy * dy
        u = 0.0
        if ll > 0.0:
            u = ((px - x0) * dx + (py - y0) * dy) / ll
            u = min(max(u, 0.0), 1.0)
        ex = px - (x0 + u * dx)
        ey = py - (y0 + u * dy)
        d = math.sqrt(ex * ex + ey * ey)
        cov = r - d + 0.5
        if cov <= 0.0:
            continue
        cov = min(cov, 1.0)
        q = min(d / r, 1.0) if r > 0.0 else 1.0
        shade = 1.0 - 0.35 * q * q
        val = val * (1.0 - cov) + albedo[k] * t * shade * cov
    return val


@numba.njit(cache=True, nogil=True)
def _render(
    caps: np.ndarray,
    albedo: np.ndarray,
    bg: np.ndarray,
    tex: np.ndarray,
    out: np.ndarray,
    sx: float,
    sy: float,
    margin: int,
) -> None:
    """Intensity of the whole sensor into ``out`` [H, W]."""
    h, w = out.shape
    which = np.arange(caps.shape[0])
    for y in range(h):
        for x in range(w):
            out[y, x] = _intensity(
                x, y, caps, albedo, bg, tex, which, caps.shape[0], sx, sy, margin
            )


@numba.njit(cache=True, nogil=True)
def _mark_capsule(
    mask: np.ndarray, x0: float, y0: float, x1: float, y1: float, r: float, tile: int
) -> None:
    th, tw = mask.shape
    reach = r + 0.7072 * tile + 1.5
    tx0 = max(0, math.floor((min(x0, x1) - reach) / tile))
    tx1 = min(tw - 1, math.floor((max(x0, x1) + reach) / tile))
    ty0 = max(0, math.floor((min(y0, y1) - reach) / tile))
    ty1 = min(th - 1, math.floor((max(y0, y1) + reach) / tile))
    dx = x1 - x0
    dy = y1 - y0
    ll = dx * dx + dy * dy
    for ty in range(ty0, ty1 + 1):
        cy = (ty + 0.5) * tile - 0.5
        for tx in range(tx0, tx1 + 1):
            cx = (tx + 0.5) * tile - 0.5
            u = 0.0
            if ll > 0.0:
                u = min(max(((cx - x0) * dx + (cy - y0) * dy) / ll, 0.0), 1.0)
            ex = cx - (x0 + u * dx)
            ey = cy - (y0 + u * dy)
            if ex * ex + ey * ey <= reach * reach:
                mask[ty, tx] = True


@numba.njit(cache=True, nogil=True, inline="always")
def _hash_uniform(seed: int, a: int, b: int) -> float:
    """A uniform number in [0, 1) that depends only on ``(seed, a, b)`` (splitmix64)."""
    z = np.uint64(seed) + np.uint64(a) * np.uint64(0x9E3779B97F4A7C15)
    z = z + np.uint64(b) * np.uint64(0xD1B54A32D192ED03)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
    return float(z >> np.uint64(11)) * (1.0 / 9007199254740992.0)


@numba.njit(cache=True, nogil=True)
def _simulate_frames(
    caps: np.ndarray,
    albedo: np.ndarray,
    frame_t: np.ndarray,
    f_start: int,
    bg: np.ndarray,
    tex: np.ndarray,
    inten: np.ndarray,
    log_i: np.ndarray,
    ref: np.ndarray,
    last_t: np.ndarray,
    c_on: np.ndarray,
    c_off: np.ndarray,
    refractory: int,
    noise_t: np.ndarray,
    noise_x: np.ndarray,
    noise_y: np.ndarray,
    noise_p: np.ndarray,
    noise_i: int,
    moved: np.ndarray,
    pending: np.ndarray,
    out_t: np.ndarray,
    out_x: np.ndarray,
    out_y: np.ndarray,
    out_p: np.ndarray,
    latency_us: float,
    max_chain: int,
    seed: int,
    threshold_noise: float,
    burst_prob: float,
    shift: np.ndarray,
    log_gain: np.ndarray,
    margin: int,
) -> tuple[int, int, int]:
    """Advance the pixel model over frames ``f_start..`` of a block (see the module doc).

    ``caps[f]`` is the scene at ``frame_t[f]``, ``shift[f]`` the camera's image shift and
    ``log_gain[f]`` the log of the illumination (lamp flicker). Each frame re-renders the
    tiles near a capsule that moved (``moved``; every tile when the camera moved) and
    re-checks the tiles left with a pixel whose event was held back by the refractory
    period (``pending``; every tile when the illumination changed). Stops early, before a
    frame whose worst case might not fit in the output buffers. State arrays are updated
    in place; ``inten`` holds the scene without the illumination gain, ``log_i`` with it.

    Returns:
        ``(n_events, next_frame, next_noise_index)``.
    """
    h, w = log_i.shape
    th, tw = moved.shape
    which = np.empty(caps.shape[1], dtype=np.int64)
    n_frames = frame_t.shape[0] - 1
    n_noise = noise_t.shape[0]
    cap_out = out_t.shape[0]
    n = 0
    f = f_start
    while f < n_frames:
        ta = frame_t[f]
        tb = frame_t[f + 1]
        span = tb - ta
        cam = shift[f, 0] != shift[f + 1, 0] or shift[f, 1] != shift[f + 1, 1]
        flick = log_gain[f] != log_gain[f + 1]
        g1 = log_gain[f + 1]
        moved[:, :] = cam
        for k in range(caps.shape[1] if not cam else 0):
            changed = False
            for j in range(5):
                if caps[f, k, j] != caps[f + 1, k, j]:
                    changed = True
                    break
            if changed:
                for g in (f, f + 1):
                    _mark_capsule(
                        moved,
                        caps[g, k, 0],
                        caps[g, k, 1],
                        caps[g, k, 2],
                        caps[g, k, 3],
                        caps[g, k, 4],
                        TILE,
                    )
        n_tiles = 0
        for ty in range(th):
            for tx in range(tw):
                if moved[ty, tx] or pending[ty, tx] or flick:
                    n_tiles += 1
        j_end = noise_i
        while j_end < n_noise and noise_t[j_end] < tb:
            j_end += 1
        per_pixel = min(span // refractory + 1, max_chain) + 1
        bound = n_tiles * TILE * TILE * per_pixel + (j_end - noise_i)
        if n + bound > cap_out:
            break
        # Noise first: it resets the pixel, so signal events of this frame respect it.
        while noise_i < j_end:
            t = noise_t[noise_i]
            x = noise_x[noise_i]
            y = noise_y[noise_i]
            if t - last_t[y, x] >= refractory:
                out_t[n] = t
                out_x[n] = x
                out_y[n] = y
                out_p[n] = noise_p[noise_i]
                n += 1
                last_t[y, x] = t
            noise_i += 1
        if n_tiles == 0:
            f += 1
            continue
        scene = caps[f + 1]
        for ty in range(th):
            for tx in range(tw):
                render = moved[ty, tx]
                if not (render or flick or pending[ty, tx]):
                    continue
                n_which = 0
                if render:  # the capsules that can touch this tile, in painting order
                    xa = tx * TILE - 1.0
                    xb = (tx + 1) * TILE
                    ya = ty * TILE - 1.0
                    yb = (ty + 1) * TILE
                    for k in range(scene.shape[0]):
                        rr = scene[k, 4] + 1.0
                        if min(scene[k, 0], scene[k, 2]) - rr > xb:
                            continue
                        if max(scene[k, 0], scene[k, 2]) + rr < xa:
                            continue
                        if min(scene[k, 1], scene[k, 3]) - rr > yb:
                            continue
                        if max(scene[k, 1], scene[k, 3]) + rr < ya:
                            continue
                        which[n_which] = k
                        n_which += 1
                still_pending = False
                for y in range(ty * TILE, min(h, (ty + 1) * TILE)):
                    for x in range(tx * TILE, min(w, (tx + 1) * TILE)):
                        l0 = log_i[y, x]
                        l1 = l0
                        if render:
                            inten[y, x] = _intensity(
                                x, y, scene, albedo, bg, tex, which, n_which,
                                shift[f + 1, 0], shift[f + 1, 1], margin,
                            )  # fmt: skip
                        if render or flick:
                            l1 = math.log(inten[y, x]) + g1
                            log_i[y, x] = l1
                        r = ref[y, x]
                        # Temporal threshold noise, drawn per pixel and frame.
                        jit = math.exp(
                            threshold_noise
                            * 1.732
                            * (2.0 * _hash_uniform(seed + 1, y * w + x, ta) - 1.0)
                        )
                        con = c_on[y, x] * jit
                        coff = c_off[y, x] * jit
                        if r - coff < l1 < r + con:
                            continue
                        lt = last_t[y, x]
                        # Latency of this pixel in this frame (bandwidth: longer when dark).
                        u = _hash_uniform(seed, y * w + x, ta)
                        mean = latency_us * min(math.sqrt(0.3 / max(inten[y, x], 1e-3)), 4.0)
                        lat = int(-mean * math.log(1.0 - u))
                        count = 0
                        while True:
                            if l1 - r >= con:
                                pol = 1
                                level = r + con
                                frac = 0.0 if l0 >= level else (level - l0) / (l1 - l0)
                            elif r - l1 >= coff:
                                pol = 0
                                level = r - coff
                                frac = 0.0 if l0 <= level else (l0 - level) / (l0 - l1)
                            else:
                                break
                            if count >= max_chain:  # the rest of this change is lost
                                r = l1
                                break
                            if count == 0:
                                tc = ta + int(frac * span) + lat
                            else:  # a burst: the pixel re-fires as soon as it may
                                tc = lt + refractory
                            delayed = tc < lt + refractory
                            if delayed:
                                tc = lt + refractory
                            if tc - lat >= tb:
                                still_pending = True
                                break
                            out_t[n] = tc
                            out_x[n] = x
                            out_y[n] = y
                            out_p[n] = pol
                            n += 1
                            count += 1
                            lt = tc
                            if (
                                count == 1
                                and n < cap_out
                                and (_hash_uniform(seed + 2, y * w + x, ta) < burst_prob)
                            ):  # a double fire, within a refractory period (DVS128 bursts)
                                out_t[n] = tc + refractory
                                out_x[n] = x
                                out_y[n] = y
                                out_p[n] = pol
                                n += 1
                                lt = tc + refractory
                            if delayed and count == 1:
                                r = l0 + (l1 - l0) * min(1.0, (tc - lat - ta) / span)
                            else:
                                r = level
                        ref[y, x] = r
                        last_t[y, x] = lt
                pending[ty, tx] = still_pending
        f += 1
    return n, f, noise_i


# ---------------------------------------------------------------------------------------
# The generator
# ---------------------------------------------------------------------------------------


def _smooth_field(rng: np.random.Generator, size: tuple[int, int], cell_px: float) -> FloatArray:
    """Smooth random texture [H, W] with zero mean and unit-ish amplitude (bilinear noise)."""
    w, h = size
    gw = max(2, math.ceil(w / cell_px) + 2)
    gh = max(2, math.ceil(h / cell_px) + 2)
    grid = rng.standard_normal((gh, gw))
    xs = np.arange(w) / cell_px
    ys = np.arange(h) / cell_px
    x0 = np.floor(xs).astype(int)
    y0 = np.floor(ys).astype(int)
    fx = _smoothstep(xs - x0)[None, :]
    fy = _smoothstep(ys - y0)[:, None]
    g00 = grid[np.ix_(y0, x0)]
    g01 = grid[np.ix_(y0, x0 + 1)]
    g10 = grid[np.ix_(y0 + 1, x0)]
    g11 = grid[np.ix_(y0 + 1, x0 + 1)]
    top = g00 * (1 - fx) + g01 * fx
    bottom = g10 * (1 - fx) + g11 * fx
    field: FloatArray = top * (1 - fy) + bottom * fy
    return field / max(float(np.std(field)), 1e-9) * 0.5


class SyntheticGestures:
    """A seeded synthetic gesture recording that streams its events.

    The schedule, the person and the sensor are drawn in the constructor, so
    :attr:`labels` is known before any event is simulated. Each call of :meth:`packets`
    simulates the recording again from the start (identical every time).

    Args:
        config: What to generate.
    """

    BLOCK_FRAMES = 64
    """Frames simulated per numba call (fixed: noise is drawn per block)."""

    def __init__(self, config: SynthConfig) -> None:
        self.config = config
        seq = np.random.SeedSequence(int(config.seed))
        self._seed_schedule, self._seed_person, self._seed_sensor, self._seed_noise = seq.spawn(4)
        (self._seed_scene,) = np.random.SeedSequence([int(config.seed), 1]).spawn(1)
        self.frame_us = max(1, round(1e6 / config.render_hz))
        self._gestures = self._draw_schedule()
        self._person = self._draw_person()

    # -- schedule and person ------------------------------------------------------------

    def _draw_schedule(self) -> list[_Gesture]:
        cfg = self.config
        rng = np.random.default_rng(self._seed_schedule)
        rng_scene = np.random.default_rng(self._seed_scene)
        scene_p = _scene_probabilities(cfg.scene_weights)
        total = cfg.duration_us
        step = self.frame_us  # windows start and end on frame times: no motion outside them
        # Mean scene length that brings the no-gesture share to the target.
        g_mean = sum(cfg.gesture_s) / 2
        gap_mean = sum(cfg.gap_s) / 2
        share = cfg.no_gesture_share
        scene_mean = (share * (g_mean + gap_mean) - gap_mean) / (1.0 - share)
        self._scenes: list[_Scene] = []
        segments: list[SceneSegment] = []

        def draw(lo_hi: tuple[float, float]) -> int:
            return round(rng.uniform(*lo_hi) * 1e6 / step) * step

        t = draw(cfg.gap_s)
        segments.append(SceneSegment(0, t, "idle"))
        out: list[_Gesture] = []
        while True:
            order = rng.permutation(NUM_CLASSES)
            for label in order:
                dur = max(step, draw(cfg.gesture_s))
                gap = draw(cfg.gap_s)
                params = (
                    rng.uniform(0.75, 1.3),
                    rng.uniform(0.8, 1.2),
                    rng.uniform(0.0, 2 * math.pi),
                    float(rng.choice([-1.0, 1.0])),
                    rng.uniform(size=16),
                )
                if scene_mean > 0.2:  # a scene, then a short still gap, before the gesture
                    name = SCENES[int(rng_scene.choice(len(SCENES), p=scene_p))]
                    sd = round(rng_scene.uniform(0.6, 1.4) * scene_mean * 1e6 / step) * step
                    if name in ("walk", "leave_empty"):
                        sd = max(sd, 2_500_000 if name == "walk" else 4_000_000)
                    still = round(rng_scene.uniform(0.2, 0.4) * 1e6 / step) * step
                    extra = rng_scene.uniform(size=8)
                    if t + sd + still + dur <= total:  # else the gesture alone, if it fits
                        self._scenes.append(_Scene(SceneSegment(t, t + sd, name), extra))
                        segments.append(SceneSegment(t, t + sd, name))
                        segments.append(SceneSegment(t + sd, t + sd + still, "idle"))
                        t += sd + still
                if t + dur > total:
                    self._segments = self._close(segments, t, total)
                    return out
                out.append(_Gesture(GestureWindow(t, t + dur, int(label)), *params))
                segments.append(SceneSegment(t + dur, t + dur + gap, "idle"))
                t += dur + gap

    @staticmethod
    def _close(segments: list[SceneSegment], t: int, total: int) -> list[SceneSegment]:
        """Clip the segments to the recording and let the last still stretch reach its end."""
        out = [SceneSegment(a.start_us, min(a.end_us, total), a.name) for a in segments]
        out = [a for a in out if a.start_us < a.end_us]
        if t < total:
            if out and out[-1].name == "idle" and out[-1].end_us >= t:
                out[-1] = SceneSegment(out[-1].start_us, total, "idle")
            else:
                out.append(SceneSegment(t, total, "idle"))
        return out

    @property
    def scenes(self) -> list[SceneSegment]:
        """Every stretch outside the gesture windows, in time order, with ``t0_us`` added:
        ``"idle"`` (standing still) or the name of a no-gesture scene (:data:`SCENES`).
        With :attr:`labels` they tile the recording."""
        t0 = int(self.config.t0_us)
        return [SceneSegment(a.start_us + t0, a.end_us + t0, a.name) for a in self._segments]

    @property
    def margin_px(self) -> int:
        """Extra background on every side, for the camera's pans and shakes."""
        return math.ceil(0.25 * min(self.config.sensor_size)) + 2

    def _draw_person(self) -> _Person:
        w, h = self.config.sensor_size
        rng = np.random.default_rng(self._seed_person)
        # Scale 0.6-1.4x of a mid framing (log-uniform): upper body fills most of the frame.
        unit = min(h, 1.3 * w) * 0.73 * math.exp(rng.uniform(math.log(0.6), math.log(1.4)))
        neck_x = w / 2 + rng.uniform(-0.09, 0.09) * min(w, h)
        neck_y = h * rng.uniform(0.03, 0.09) + 0.34 * unit
        bright = rng.random() < 0.6
        if bright:
            skin = rng.uniform(0.7, 1.0)
            shirt = skin * rng.uniform(0.5, 0.7)
            legs = rng.uniform(0.35, 0.55)
        else:
            skin = rng.uniform(0.3, 0.45)
            shirt = skin * rng.uniform(0.4, 0.6)
            legs = rng.uniform(0.1, 0.2)
        # The second person (farther, behind) and the object: their own clothes and colour.
        other_shirt = rng.uniform(0.1, 1.0)
        other_skin = rng.uniform(0.3, 1.0)
        other_legs = rng.uniform(0.1, 0.6)
        thing = rng.uniform(0.1, 1.0)
        albedo = np.array(
            [legs, legs, shirt, shirt, skin, skin, shirt, skin, skin, shirt, skin, skin,
             skin, skin, skin, skin,
             other_legs, other_legs, other_shirt, other_skin, other_shirt, other_shirt,
             thing]
        )  # fmt: skip
        self._background = rng.uniform(0.12, 0.25) if bright else rng.uniform(0.65, 0.9)
        m = self.margin_px
        big = (w + 2 * m, h + 2 * m)
        self._bg_field = 0.8 * _smooth_field(rng, big, max(6.0, min(w, h) / 5)) + 0.4 * (
            _smooth_field(rng, big, max(3.0, min(w, h) / 16))
        )
        self._tex_field = _smooth_field(rng, big, max(3.0, min(w, h) / 25))
        # Lower, varied limb/background contrast: pull every part's log albedo towards the
        # background's (real people at DVS Gesture distance give sparse, ragged edges).
        log_ratio = np.log(albedo / self._background)
        log_ratio *= rng.uniform(0.25, 0.6) / max(float(np.abs(log_ratio).max()), 1e-6)
        albedo = self._background * np.exp(log_ratio)
        # Clothing: plain, stripes or a fine print, on the texture field.
        cloth = int(rng.integers(3))
        if cloth == 1:
            period = rng.uniform(3.0, 7.0) * max(1.0, min(w, h) / 128)
            yy = np.arange(big[1], dtype=np.float64)[:, None] + 0.3 * np.arange(big[0])[None, :]
            self._tex_field = self._tex_field + 0.6 * np.sign(np.sin(2 * math.pi * yy / period))
        elif cloth == 2:
            self._tex_field = self._tex_field + 0.6 * _smooth_field(rng, big, 1.5)
        return _Person(neck_x, neck_y, unit, albedo)

    @property
    def labels(self) -> list[GestureWindow]:
        """The gesture windows, in time order, with ``t0_us`` added (known up front)."""
        t0 = int(self.config.t0_us)
        return [
            GestureWindow(g.window.start_us + t0, g.window.end_us + t0, g.window.label)
            for g in self._gestures
        ]

    def capsules_at(self, t_us: npt.ArrayLike) -> FloatArray:
        """The scene at recording times ``t_us`` (relative to the start, without ``t0_us``).

        Returns:
            ``[n, N_PARTS, 5]`` capsules in pixels, camera shift included: ``x0, y0, x1, y1,
            radius`` of the parts named in ``_PART_NAMES`` (leg_r, leg_l, torso, shoulders,
            neck, head, upper_r, fore_r, hand_r, upper_l, fore_l, hand_l, fingers and thumbs,
            the second person, the object); a part out of the scene is at ``_OFF``, radius 0.
        """
        t = np.atleast_1d(np.asarray(t_us, dtype=np.int64))
        n = t.shape[0]
        rest_r, rest_l = _rest_hands()
        hand_r = np.broadcast_to(rest_r, (n, 2)).copy()
        hand_l = np.broadcast_to(rest_l, (n, 2)).copy()
        bend_r = np.ones(n)
        bend_l = -np.ones(n)
        offset = np.zeros((n, 2))
        starts = np.array([g.window.start_us for g in self._gestures], dtype=np.int64)
        idx = np.searchsorted(starts, t, side="right") - 1
        for gi in np.unique(idx[idx >= 0]):
            g = self._gestures[int(gi)]
            m = (idx == gi) & (t < g.window.end_us)
            if not m.any():
                continue
            s = (t[m] - g.window.start_us) / 1e6
            dur = g.window.duration_us / 1e6
            ramp = min(0.3, dur / 4)
            env = _envelope(s, dur, ramp)[:, None]
            r, left, br, bl, off = _gesture_targets(g.window.label, s, g)
            hand_r[m] = rest_r + env * (r - rest_r)
            hand_l[m] = rest_l + env * (left - rest_l)
            bend_r[m] = br
            bend_l[m] = bl
            offset[m] = env * off
        head_dx = np.zeros(n)
        for sc, m, s, dur in self._scene_times(t):
            env = _envelope(s, dur, min(0.4, dur / 4))[:, None]
            sr, sl, off, head = _scene_targets(sc.segment.name, s, dur, sc.extra)
            if sr is not None:
                hand_r[m] = rest_r + env * (sr - rest_r)
                bend_r[m] = 1.0
            if sl is not None:
                hand_l[m] = rest_l + env * (sl - rest_l)
                bend_l[m] = -1.0
            offset[m] = (
                off if sc.segment.name in ("walk", "leave_empty", "sit_stand") else (env * off)
            )
            head_dx[m] = env[:, 0] * head
        body = _body_capsules(offset, hand_r, hand_l, bend_r, bend_l)
        body[:, 5, 0] += head_dx
        body[:, 5, 2] += head_dx
        p = self._person
        body *= p.unit_px
        body[:, :, 0] += p.neck_x
        body[:, :, 2] += p.neck_x
        body[:, :, 1] += p.neck_y
        body[:, :, 3] += p.neck_y
        caps = np.zeros((n, N_PARTS, 5))
        caps[:, :, 0:4] = _OFF
        caps[:, :N_BODY] = body
        for sc, m, s, dur in self._scene_times(t, ("pass_behind", "reach_object")):
            if sc.segment.name == "pass_behind":
                caps[m, _P2] = self._passer(s, dur, sc.extra)
            else:  # the object sits in the moving hand, grown in and out with the reach
                env = _envelope(s, dur, min(0.4, dur / 4))
                k = 8 if sc.extra[0] < 0.5 else 11
                hand = caps[m, k, 0:2]
                d = caps[m, k, 2:4] - hand
                d /= np.maximum(np.hypot(d[:, 0], d[:, 1]), 1e-9)[:, None]
                kind = int(sc.extra[5] * 3)  # mug, phone, box
                length, radius = ((0.05, 0.045), (0.09, 0.02), (0.06, 0.065))[min(kind, 2)]
                along = np.array([[0.0, -1.0]]) if kind != 1 else d  # a mug stands upright
                centre = hand + 0.05 * p.unit_px * d
                half = 0.5 * length * p.unit_px * along
                caps[m, _OBJECT, 0:2] = centre - half
                caps[m, _OBJECT, 2:4] = centre + half
                caps[m, _OBJECT, 4] = radius * p.unit_px * np.minimum(1.0, 1.5 * env)
        shift = self._shift_px(t)
        on = caps[:, :, 0] > _OFF / 2
        for j in (0, 2):
            caps[:, :, j] += np.where(on, shift[:, 0:1], 0.0)
            caps[:, :, j + 1] += np.where(on, shift[:, 1:2], 0.0)
        return caps

    def _passer(self, s: FloatArray, dur: float, e: FloatArray) -> FloatArray:
        """Capsules ``[n, 6, 5]`` (pixels) of the second person walking across behind."""
        w, _ = self.config.sensor_size
        p = self._person
        u = p.unit_px * (0.4 + 0.25 * e[1])
        go = s / dur
        if e[0] < 0.5:
            go = 1.0 - go
        x = -0.3 * w + 1.6 * w * go
        y = p.neck_y - 0.1 * p.unit_px + (e[2] - 0.5) * 0.15 * p.unit_px
        gait = 2.0 * math.pi * (1.6 + 0.5 * e[3]) * s
        swing = 0.35 * np.sin(gait)
        out = np.empty((s.shape[0], 6, 5))

        def seg(
            k: int, ax: FloatArray, ay: FloatArray, bx: FloatArray, by: FloatArray, r: float
        ) -> None:
            out[:, k, 0] = x + u * ax
            out[:, k, 1] = y + u * ay
            out[:, k, 2] = x + u * bx
            out[:, k, 3] = y + u * by
            out[:, k, 4] = r * u

        zero = np.zeros_like(s)
        for k, sx, sg in ((0, -0.07, swing), (1, 0.07, -swing)):
            seg(k, zero + sx, zero + 0.45, sx + 0.55 * np.sin(sg), 0.45 + 0.55 * np.cos(sg), 0.07)
        seg(2, zero, zero + 0.12, zero, zero + 0.38, 0.14)
        seg(3, zero, zero - 0.15 + 0.01 * np.abs(np.sin(gait)), zero, zero - 0.11, 0.085)
        for k, sx, sg in ((4, -0.17, -0.8 * swing), (5, 0.17, 0.8 * swing)):
            seg(k, zero + sx, zero + 0.03, sx + 0.37 * np.sin(sg), 0.03 + 0.37 * np.cos(sg), 0.045)
        return out

    def _shift_px(self, t: npt.NDArray[np.int64]) -> FloatArray:
        """The camera's image shift ``[n, 2]`` in pixels at recording times ``t``."""
        out = np.zeros((t.shape[0], 2))
        side = min(self.config.sensor_size)
        for sc, m, s, dur in self._scene_times(t, ("shake", "pan")):
            out[m] = side * _camera_shift(sc.segment.name, s, dur, sc.extra)
        return out

    def _log_gain(self, t: npt.NDArray[np.int64]) -> FloatArray:
        """Log illumination ``[n]`` at recording times ``t``: 0, or lamp flicker."""
        out = np.zeros(t.shape[0])
        for sc, m, s, dur in self._scene_times(t, ("flicker",)):
            env = _envelope(s, dur, min(0.3, dur / 4))
            depth = 0.03 + 0.1 * sc.extra[1]
            hz = 100.0 if sc.extra[2] < 0.5 else 120.0
            out[m] = np.log1p(env * depth * np.cos(2.0 * math.pi * hz * (t[m] / 1e6)))
        return out

    def _scene_times(
        self, t: npt.NDArray[np.int64], names: tuple[str, ...] | None = None
    ) -> Iterator[tuple[_Scene, npt.NDArray[np.bool_], FloatArray, float]]:
        """``(scene, mask of t inside it, seconds into it, its duration)`` for each scene
        (of ``names``, or all) that ``t`` (recording times) reaches."""
        for sc in self._scenes:
            if names is not None and sc.segment.name not in names:
                continue
            a, b = sc.segment.start_us, sc.segment.end_us
            m = (t >= a) & (t < b)
            if m.any():
                yield sc, m, (t[m] - a) / 1e6, (b - a) / 1e6

    def render(self, t_us: int) -> npt.NDArray[np.float32]:
        """The scene intensity image ``[H, W]`` at recording time ``t_us`` (for inspection)."""
        w, h = self.config.sensor_size
        out = np.empty((h, w), dtype=np.float64)
        bg, tex = self._textures()
        t = np.array([t_us], dtype=np.int64)
        sx, sy = self._shift_px(t)[0]
        caps = self.capsules_at(t)[0][_PAINT]
        _render(caps, self._person.albedo[_PAINT], bg, tex, out, sx, sy, self.margin_px)
        return (out * np.exp(self._log_gain(t)[0])).astype(np.float32)

    def _textures(self) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
        bg = np.clip(self._background * (1.0 + 0.25 * self._bg_field), 0.03, None)
        tex = np.clip(1.0 + 0.2 * self._tex_field, 0.7, 1.4)
        return bg.astype(np.float32), tex.astype(np.float32)

    # -- simulation ------------------------------------------------------------------

    def packets(self, packet_us: int = 1000) -> Iterator[Events]:
        """Simulate the recording and yield it in packets of ``packet_us`` each.

        Packet ``k`` holds the events with ``t0 + k*packet_us <= t < t0 + (k+1)*packet_us``
        (empty packets included, so that time advances; the last one may be shorter).
        Events are sorted by ``t`` within and across packets. Memory stays flat: only one
        block of frames is simulated ahead.

        Shapes:
            Each packet: ``[n]`` of :data:`~smastream.stream.events.EVENT_DTYPE`.
        """
        if int(packet_us) <= 0:
            raise ValueError(f"packet_us must be a positive integer, got {packet_us!r}")
        packet_us = int(packet_us)
        cfg = self.config
        t0 = int(cfg.t0_us)
        total = cfg.duration_us
        next_edge = packet_us
        pending = np.empty(0, dtype=EVENT_DTYPE)
        for block, block_end in self._blocks():
            buf = np.concatenate([pending, block]) if len(pending) else block
            while next_edge <= block_end:
                cut = int(np.searchsorted(buf["t"], t0 + next_edge, side="left"))
                yield buf[:cut]
                buf = buf[cut:]
                next_edge += packet_us
            pending = buf
        if next_edge - packet_us < total:  # the last, shorter packet
            yield pending

    def _blocks(self) -> Iterator[tuple[Events, int]]:
        """Simulate block after block of frames.

        Yields:
            ``(events, end_us)``: the sorted events of the block and the block's end time
            (relative to the start of the recording; all events are before it).
        """
        cfg = self.config
        w, h = cfg.sensor_size
        total = cfg.duration_us
        dt = self.frame_us
        n_frames = -(-total // dt)
        frame_t = np.minimum(np.arange(n_frames + 1, dtype=np.int64) * dt, total)
        p = self._person
        albedo = p.albedo[_PAINT].astype(np.float64)
        bg, tex = self._textures()
        margin = self.margin_px

        rng_sensor = np.random.default_rng(self._seed_sensor)
        sigma = cfg.threshold_sigma
        # Log-normal mismatch: a few very sensitive pixels, many sluggish ones (ragged edges).
        common = rng_sensor.standard_normal((h, w))
        c_on = cfg.threshold_on * np.exp(
            sigma / cfg.threshold_on * (0.7 * common + 0.71 * rng_sensor.standard_normal((h, w)))
        )
        c_off = cfg.threshold_off * np.exp(
            sigma / cfg.threshold_off * (0.7 * common + 0.71 * rng_sensor.standard_normal((h, w)))
        )
        c_on = np.clip(c_on, 0.05, None)
        c_off = np.clip(c_off, 0.05, None)
        n_hot = min(int(cfg.n_hot_pixels), w * h)
        hot_idx = rng_sensor.choice(w * h, size=n_hot, replace=False)
        hot_hz = rng_sensor.uniform(*cfg.hot_pixel_hz, size=n_hot)
        rng_noise = np.random.default_rng(self._seed_noise)

        inten = np.empty((h, w), dtype=np.float64)
        t_first = np.zeros(1, dtype=np.int64)
        sx, sy = self._shift_px(t_first)[0]
        _render(self.capsules_at(t_first)[0][_PAINT], albedo, bg, tex, inten, sx, sy, margin)
        log_i = np.log(inten) + self._log_gain(t_first)[0]
        ref = log_i.copy()
        last_t = np.full((h, w), _NEVER, dtype=np.int64)
        moved = np.zeros((-(-h // TILE), -(-w // TILE)), dtype=np.bool_)
        pending = np.zeros_like(moved)
        capacity = 1 << 20
        out_t = np.empty(capacity, np.int64)
        out_x = np.empty(capacity, np.uint16)
        out_y = np.empty(capacity, np.uint16)
        out_p = np.empty(capacity, np.uint8)
        refr = int(cfg.refractory_us)
        t0 = int(cfg.t0_us)
        sensor_seed = int(rng_sensor.integers(0, 1 << 62))
        carry = np.empty(0, dtype=EVENT_DTYPE)

        for b0 in range(0, n_frames, self.BLOCK_FRAMES):
            ft = frame_t[b0 : b0 + self.BLOCK_FRAMES + 1]
            caps = np.ascontiguousarray(self.capsules_at(ft)[:, _PAINT])
            shift = self._shift_px(ft)
            log_gain = self._log_gain(ft)
            nt, nx, ny, np_ = self._noise(rng_noise, int(ft[0]), int(ft[-1]), hot_idx, hot_hz)
            pieces = []
            f, ni = 0, 0
            while f < len(ft) - 1:
                n, f_next, ni = _simulate_frames(
                    caps,
                    albedo,
                    ft,
                    f,
                    bg,
                    tex,
                    inten,
                    log_i,
                    ref,
                    last_t,
                    c_on,
                    c_off,
                    refr,
                    nt,
                    nx,
                    ny,
                    np_,
                    ni,
                    moved,
                    pending,
                    out_t,
                    out_x,
                    out_y,
                    out_p,
                    float(cfg.latency_us),
                    MAX_BURST,
                    sensor_seed,
                    float(cfg.threshold_noise),
                    float(cfg.burst_prob),
                    shift,
                    log_gain,
                    margin,
                )
                if f_next == f and n == 0:  # one frame needs more room than we have
                    capacity *= 4
                    out_t = np.empty(capacity, np.int64)
                    out_x = np.empty(capacity, np.uint16)
                    out_y = np.empty(capacity, np.uint16)
                    out_p = np.empty(capacity, np.uint8)
                    continue
                ev = np.empty(n, dtype=EVENT_DTYPE)
                ev["t"] = out_t[:n] + t0
                ev["x"] = out_x[:n]
                ev["y"] = out_y[:n]
                ev["p"] = out_p[:n]
                pieces.append(ev)
                f = f_next
            if len(carry):
                pieces.insert(0, carry)
            ev = np.concatenate(pieces) if len(pieces) > 1 else pieces[0]
            ev = ev[np.argsort(ev["t"], kind="stable")]
            end = int(ft[-1])
            # Latency moves events past the block's end: they join the next block.
            cut = int(np.searchsorted(ev["t"], t0 + end, side="left"))
            carry = ev[cut:]
            yield ev[:cut], end

    def _noise(
        self, rng: np.random.Generator, ta: int, tb: int, hot_idx: np.ndarray, hot_hz: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Background-activity and hot-pixel events in ``[ta, tb)``, sorted by time."""
        w, h = self.config.sensor_size
        span_s = (tb - ta) / 1e6
        n_ba = int(rng.poisson(self.config.noise_hz * w * h * span_s))
        n_hot = rng.poisson(hot_hz * span_s) if len(hot_idx) else np.zeros(0, dtype=np.int64)
        pix = np.concatenate([rng.integers(0, w * h, n_ba), np.repeat(hot_idx, n_hot)]).astype(
            np.int64
        )
        t = np.asarray(rng.integers(ta, tb, pix.shape[0], dtype=np.int64))
        p = np.asarray(rng.random(pix.shape[0]) < 0.5, dtype=np.uint8)
        order = np.argsort(t, kind="stable")
        pix = pix[order]
        return t[order], pix % w, pix // w, p[order]


def generate(config: SynthConfig) -> tuple[Events, list[GestureWindow]]:
    """Simulate a whole recording in memory: ``(events [n], labels)``."""
    gen = SyntheticGestures(config)
    parts = [ev for ev, _ in gen._blocks()]
    events = np.concatenate(parts) if parts else np.empty(0, dtype=EVENT_DTYPE)
    return events, gen.labels
