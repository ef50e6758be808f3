"""A pure-Python MP4 writer: a flat-colour H.264 clip any standard decoder plays.

The stream is H.264 Constrained Baseline (CAVLC) in an ISO BMFF container. The first frame is
an IDR picture whose top-left macroblock is I_PCM (raw samples of the colour) and whose other
macroblocks are Intra 16x16 with DC prediction and no residual: each predicts the colour from
its neighbours, so the whole picture takes about one byte per macroblock. Every later frame is
a P picture of skipped macroblocks (a few bytes). A 1080p second is a few kilobytes, written in
milliseconds, and the frame's pixels need never exist in memory.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

# Constrained Baseline: profile 66 with constraint_set0 and constraint_set1.
PROFILE_IDC = 66
CONSTRAINT_FLAGS = 0xC0
MAX_WIDTH = 4096
MAX_HEIGHT = 4096
MAX_MACROBLOCKS = 36864  # level 5.1/5.2's frame size limit
_LOG2_MAX_FRAME_NUM = 8
_NAL_SLICE = 1
_NAL_IDR = 5
_NAL_SPS = 7
_NAL_PPS = 8
_I_PCM = 25
# Intra 16x16, DC prediction (2), no chroma or luma residual: 1 + 2 + 4*0 + 12*0.
_I16X16_DC_NO_RESIDUAL = 3
_SLICE_P = 5  # 5..9: every slice of the picture has this type
_SLICE_I = 7


class _Bits:
    """An RBSP written as a string of '0'/'1' (Python's int() turns it into bytes fast)."""

    def __init__(self) -> None:
        self._parts: list[str] = []
        self._length = 0

    def u(self, count: int, value: int) -> None:
        if count:
            self.raw(format(value, f"0{count}b"))

    def ue(self, value: int) -> None:
        self.raw(ue_bits(value))

    def se(self, value: int) -> None:
        self.ue(2 * value - 1 if value > 0 else -2 * value)

    def raw(self, bits: str) -> None:
        self._parts.append(bits)
        self._length += len(bits)

    def align_zero(self) -> None:
        self.raw("0" * (-self._length % 8))

    def trailing(self) -> bytes:
        """rbsp_trailing_bits: a stop bit, then zeros to the byte boundary."""
        self.raw("1")
        self.align_zero()
        bits = "".join(self._parts)
        return int(bits, 2).to_bytes(len(bits) // 8, "big")


def ue_bits(value: int) -> str:
    """Exp-Golomb ue(v)."""
    code = format(value + 1, "b")
    return "0" * (len(code) - 1) + code


def nal_unit(ref_idc: int, kind: int, rbsp: bytes) -> bytes:
    """A NAL unit: its header byte, then the RBSP with emulation prevention bytes."""
    out = bytearray([(ref_idc << 5) | kind])
    zeros = 0
    for byte in rbsp:
        if zeros >= 2 and byte <= 3:
            out.append(3)
            zeros = 0
        out.append(byte)
        zeros = zeros + 1 if byte == 0 else 0
    return bytes(out)


def level_idc(macroblocks: int) -> int:
    if macroblocks <= 1620:
        return 31  # up to 720p
    if macroblocks <= 8192:
        return 40  # up to 1080p
    return 51


def sps(width: int, height: int) -> bytes:
    mbs_wide, mbs_high = -(-width // 16), -(-height // 16)
    bits = _Bits()
    bits.u(8, PROFILE_IDC)
    bits.u(8, CONSTRAINT_FLAGS)
    bits.u(8, level_idc(mbs_wide * mbs_high))
    bits.ue(0)  # seq_parameter_set_id
    bits.ue(_LOG2_MAX_FRAME_NUM - 4)
    bits.ue(2)  # pic_order_cnt_type 2: output order is decoding order
    bits.ue(1)  # max_num_ref_frames
    bits.u(1, 0)  # gaps_in_frame_num_value_allowed_flag
    bits.ue(mbs_wide - 1)
    bits.ue(mbs_high - 1)
    bits.u(1, 1)  # frame_mbs_only_flag
    bits.u(1, 1)  # direct_8x8_inference_flag
    crop_right, crop_bottom = 16 * mbs_wide - width, 16 * mbs_high - height
    if crop_right or crop_bottom:
        # 4:2:0 crops in units of two samples.
        bits.u(1, 1)
        for offset in (0, crop_right // 2, 0, crop_bottom // 2):
            bits.ue(offset)
    else:
        bits.u(1, 0)
    bits.u(1, 0)  # vui_parameters_present_flag
    return nal_unit(3, _NAL_SPS, bits.trailing())


def pps() -> bytes:
    bits = _Bits()
    bits.ue(0)  # pic_parameter_set_id
    bits.ue(0)  # seq_parameter_set_id
    bits.u(1, 0)  # entropy_coding_mode_flag: CAVLC
    bits.u(1, 0)  # bottom_field_pic_order_in_frame_present_flag
    bits.ue(0)  # num_slice_groups_minus1
    bits.ue(0)  # num_ref_idx_l0_default_active_minus1
    bits.ue(0)  # num_ref_idx_l1_default_active_minus1
    bits.u(1, 0)  # weighted_pred_flag
    bits.u(2, 0)  # weighted_bipred_idc
    bits.se(0)  # pic_init_qp_minus26
    bits.se(0)  # pic_init_qs_minus26
    bits.se(0)  # chroma_qp_index_offset
    bits.u(1, 0)  # deblocking_filter_control_present_flag
    bits.u(1, 0)  # constrained_intra_pred_flag
    bits.u(1, 0)  # redundant_pic_cnt_present_flag
    return nal_unit(3, _NAL_PPS, bits.trailing())


def ycbcr(rgb: Sequence[int]) -> tuple[int, int, int]:
    """BT.601 studio range, kept within 1..254 (old decoders refuse PCM samples of 0)."""
    r, g, b = rgb
    y = 16 + (65.481 * r + 128.553 * g + 24.966 * b) / 255
    cb = 128 + (-37.797 * r - 74.203 * g + 112.0 * b) / 255
    cr = 128 + (112.0 * r - 93.786 * g - 18.214 * b) / 255
    y_, cb_, cr_ = (min(254, max(1, round(v))) for v in (y, cb, cr))
    return y_, cb_, cr_


def idr_frame(width: int, height: int, rgb: Sequence[int]) -> bytes:
    mbs_wide, mbs_high = -(-width // 16), -(-height // 16)
    bits = _Bits()
    # Slice header.
    bits.ue(0)  # first_mb_in_slice
    bits.ue(_SLICE_I)
    bits.ue(0)  # pic_parameter_set_id
    bits.u(_LOG2_MAX_FRAME_NUM, 0)  # frame_num
    bits.ue(0)  # idr_pic_id
    bits.u(1, 0)  # no_output_of_prior_pics_flag
    bits.u(1, 0)  # long_term_reference_flag
    bits.se(0)  # slice_qp_delta
    # The top-left macroblock: I_PCM, the colour's raw samples.
    y, cb, cr = ycbcr(rgb)
    bits.ue(_I_PCM)
    bits.align_zero()
    bits.raw("".join(format(v, "08b") * n for v, n in ((y, 256), (cb, 64), (cr, 64))))
    # The rest: Intra 16x16 DC, chroma DC, mb_qp_delta 0, then the luma DC block's
    # coeff_token for "no coefficients". Its VLC table depends on nC, the neighbours' mean
    # coefficient count: an I_PCM neighbour counts 16 (the 6-bit code), others 0 (code "1").
    head = ue_bits(_I16X16_DC_NO_RESIDUAL) + ue_bits(0) + "1"
    beside_pcm, elsewhere = head + "000011", head + "1"
    for row in range(mbs_high):
        if row == 0:
            line = (beside_pcm if mbs_wide > 1 else "") + elsewhere * max(0, mbs_wide - 2)
        elif row == 1:
            line = beside_pcm + elsewhere * (mbs_wide - 1)
        else:
            line = elsewhere * mbs_wide
        bits.raw(line)
    return nal_unit(3, _NAL_IDR, bits.trailing())


def skipped_frame(width: int, height: int, frame_num: int) -> bytes:
    """A P picture whose every macroblock repeats the previous picture."""
    macroblocks = -(-width // 16) * -(-height // 16)
    bits = _Bits()
    bits.ue(0)  # first_mb_in_slice
    bits.ue(_SLICE_P)
    bits.ue(0)  # pic_parameter_set_id
    bits.u(_LOG2_MAX_FRAME_NUM, frame_num % (1 << _LOG2_MAX_FRAME_NUM))
    bits.u(1, 0)  # num_ref_idx_active_override_flag
    bits.u(1, 0)  # ref_pic_list_modification_flag_l0
    bits.u(1, 0)  # adaptive_ref_pic_marking_mode_flag
    bits.se(0)  # slice_qp_delta
    bits.ue(macroblocks)  # mb_skip_run: all of them
    return nal_unit(2, _NAL_SLICE, bits.trailing())


def encode_mp4(width: int, height: int, fps: int, frames: int, rgb: Sequence[int]) -> bytes:
    """A clip of `frames` frames at `fps`, every pixel `rgb`. Width and height must be even."""
    if not (2 <= width <= MAX_WIDTH and 2 <= height <= MAX_HEIGHT) or width % 2 or height % 2:
        raise ValueError(f"width and height must be even, 2..{MAX_WIDTH} x 2..{MAX_HEIGHT}")
    if -(-width // 16) * -(-height // 16) > MAX_MACROBLOCKS:
        raise ValueError("frame too large")
    if not (1 <= fps <= 240 and frames >= 1):
        raise ValueError("fps must be 1..240 and frames at least 1")
    seq, pic = sps(width, height), pps()
    samples = [idr_frame(width, height, rgb)]
    samples += [skipped_frame(width, height, n) for n in range(1, frames)]
    # AVC sample format: each NAL prefixed with its 4-byte length.
    payloads = [struct.pack(">I", len(nal)) + nal for nal in samples]
    timescale = fps * 1000
    ftyp = _box(b"ftyp", b"isom" + struct.pack(">I", 0x200) + b"isomiso2avc1mp41")

    def moov(data_offset: int) -> bytes:
        return _moov(width, height, timescale, frames, seq, pic, payloads, data_offset)

    # moov first (a player can start before the end); its size does not depend on the offset.
    data_offset = len(ftyp) + len(moov(0)) + 8
    mdat = b"".join(payloads)
    return b"".join([ftyp, moov(data_offset), struct.pack(">I", 8 + len(mdat)), b"mdat", mdat])


_MATRIX = struct.pack(">9I", 0x10000, 0, 0, 0, 0x10000, 0, 0, 0, 0x40000000)


def _moov(
    width: int,
    height: int,
    timescale: int,
    frames: int,
    seq: bytes,
    pic: bytes,
    payloads: Sequence[bytes],
    data_offset: int,
) -> bytes:
    frame_ticks = 1000  # timescale is fps * 1000
    media_duration = frames * frame_ticks
    movie_duration = media_duration * 1000 // timescale  # in the movie's milliseconds
    mvhd = _full_box(
        b"mvhd",
        0,
        0,
        struct.pack(">IIII", 0, 0, 1000, movie_duration)
        + struct.pack(">IH", 0x10000, 0x100)
        + bytes(10)
        + _MATRIX
        + bytes(24)
        + struct.pack(">I", 2),
    )
    tkhd = _full_box(
        b"tkhd",
        0,
        3,  # enabled, in movie
        struct.pack(">IIIII", 0, 0, 1, 0, movie_duration)
        + bytes(8)
        + struct.pack(">HHHH", 0, 0, 0, 0)
        + _MATRIX
        + struct.pack(">II", width << 16, height << 16),
    )
    mdhd = _full_box(
        b"mdhd", 0, 0, struct.pack(">IIIIHH", 0, 0, timescale, media_duration, 0x55C4, 0)
    )
    hdlr = _full_box(b"hdlr", 0, 0, struct.pack(">I4s12x", 0, b"vide") + b"VideoHandler\0")
    vmhd = _full_box(b"vmhd", 0, 1, struct.pack(">HHHH", 0, 0, 0, 0))
    dinf = _box(
        b"dinf", _full_box(b"dref", 0, 0, struct.pack(">I", 1) + _full_box(b"url ", 0, 1, b""))
    )
    avcc = _box(
        b"avcC",
        bytes([1, seq[1], seq[2], seq[3], 0xFF, 0xE1])
        + struct.pack(">H", len(seq))
        + seq
        + bytes([1])
        + struct.pack(">H", len(pic))
        + pic,
    )
    name = b"falrelay fake fal"
    avc1 = _box(
        b"avc1",
        bytes(6)
        + struct.pack(">H", 1)  # data_reference_index
        + bytes(16)
        + struct.pack(">HH", width, height)
        + struct.pack(">II", 0x480000, 0x480000)  # 72 dpi
        + bytes(4)
        + struct.pack(">H", 1)  # frame_count
        + bytes([len(name)])
        + name.ljust(31, b"\0")
        + struct.pack(">Hh", 0x18, -1)
        + avcc,
    )
    stsd = _full_box(b"stsd", 0, 0, struct.pack(">I", 1) + avc1)
    stts = _full_box(b"stts", 0, 0, struct.pack(">III", 1, frames, frame_ticks))
    stss = _full_box(b"stss", 0, 0, struct.pack(">II", 1, 1))
    stsc = _full_box(b"stsc", 0, 0, struct.pack(">IIII", 1, 1, frames, 1))
    sizes = struct.pack(f">{len(payloads)}I", *(len(p) for p in payloads))
    stsz = _full_box(b"stsz", 0, 0, struct.pack(">II", 0, frames) + sizes)
    stco = _full_box(b"stco", 0, 0, struct.pack(">II", 1, data_offset))
    stbl = _box(b"stbl", stsd + stts + stss + stsc + stsz + stco)
    minf = _box(b"minf", vmhd + dinf + stbl)
    mdia = _box(b"mdia", mdhd + hdlr + minf)
    trak = _box(b"trak", tkhd + mdia)
    return _box(b"moov", mvhd + trak)


def _box(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", 8 + len(payload)) + kind + payload


def _full_box(kind: bytes, version: int, flags: int, payload: bytes) -> bytes:
    return _box(kind, struct.pack(">I", (version << 24) | flags) + payload)
