/*
 * fpu: proves the FPU/SSE/AVX(-512) state survives a ucall exit, and so a snapshot
 * save/restore at each GUEST_SYNC. For each stage, one assembly routine loads
 * every register from a pattern (x87 control word and all 8 stack slots, MXCSR,
 * xmm0-15, or ymm0-15 with their upper halves, or zmm0-31 and k0-7 when AVX-512 is
 * enabled), sends the SYNC ucall, and stores every register back before any
 * compiled code can run; C then compares. Finishes with GUEST_DONE.
 * `level=sse|avx|avx512` on the command line caps the level tested.
 */
#include "guest.h"

#define STAGES 4

/* Offsets used by the assembly below. */
#define OFF_X87   0
#define OFF_MXCSR 64
#define OFF_FCW   68
#define OFF_FSW   70
#define OFF_FSW0  72
#define OFF_K     128
#define OFF_VEC   192
#define VEC_REGS  32
#define VEC_BYTES 64

struct fpu_regs {
	uint64_t x87[8]; /* doubles, st(0) first */
	uint32_t mxcsr;
	uint16_t fcw, fsw, fsw_before;
	uint8_t pad[128 - 74];
	uint64_t k[8];
	uint8_t vec[VEC_REGS][VEC_BYTES];
} __attribute__((aligned(64)));

_Static_assert(__builtin_offsetof(struct fpu_regs, mxcsr) == OFF_MXCSR, "asm offsets");
_Static_assert(__builtin_offsetof(struct fpu_regs, fcw) == OFF_FCW, "asm offsets");
_Static_assert(__builtin_offsetof(struct fpu_regs, fsw) == OFF_FSW, "asm offsets");
_Static_assert(__builtin_offsetof(struct fpu_regs, fsw_before) == OFF_FSW0, "asm offsets");
_Static_assert(__builtin_offsetof(struct fpu_regs, k) == OFF_K, "asm offsets");
_Static_assert(__builtin_offsetof(struct fpu_regs, vec) == OFF_VEC, "asm offsets");

enum level { LEVEL_SSE, LEVEL_AVX, LEVEL_AVX512 };

/* (in = rdi, out = rsi, ucall block GPA = edx) */
void fpu_roundtrip_sse(const struct fpu_regs *in, struct fpu_regs *out, uint32_t uc);
void fpu_roundtrip_avx(const struct fpu_regs *in, struct fpu_regs *out, uint32_t uc);
void fpu_roundtrip_avx512(const struct fpu_regs *in, struct fpu_regs *out, uint32_t uc);

#define S_(x) #x
#define S(x) S_(x)

__asm__(
	".macro x87_load\n"
	"	fninit\n"
	"	fldcw " S(OFF_FCW) "(%rdi)\n"
	"	.irp i,7,6,5,4,3,2,1,0\n"
	"	fldl " S(OFF_X87) "+\\i*8(%rdi)\n"          /* last pushed = st(0) = x87[0] */
	"	.endr\n"
	"	fnstsw " S(OFF_FSW0) "(%rsi)\n"
	"	ldmxcsr " S(OFF_MXCSR) "(%rdi)\n"
	".endm\n"
	".macro ucall_and_x87_store\n"
	"	movl %edx, %eax\n"
	"	movl $" S(EMBER_PORT_UCALL) ", %edx\n"
	"	outl %eax, %dx\n"
	"	fnstsw " S(OFF_FSW) "(%rsi)\n"
	"	fnstcw " S(OFF_FCW) "(%rsi)\n"
	"	stmxcsr " S(OFF_MXCSR) "(%rsi)\n"
	"	.irp i,0,1,2,3,4,5,6,7\n"
	"	fstpl " S(OFF_X87) "+\\i*8(%rsi)\n"
	"	.endr\n"
	".endm\n"

	".text\n"
	".globl fpu_roundtrip_sse\n"
	"fpu_roundtrip_sse:\n"
	"	x87_load\n"
	"	.irp i,0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15\n"
	"	movdqu " S(OFF_VEC) "+\\i*" S(VEC_BYTES) "(%rdi), %xmm\\i\n"
	"	.endr\n"
	"	ucall_and_x87_store\n"
	"	.irp i,0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15\n"
	"	movdqu %xmm\\i, " S(OFF_VEC) "+\\i*" S(VEC_BYTES) "(%rsi)\n"
	"	.endr\n"
	"	ret\n"

	".globl fpu_roundtrip_avx\n"
	"fpu_roundtrip_avx:\n"
	"	x87_load\n"
	"	.irp i,0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15\n"
	"	vmovdqu " S(OFF_VEC) "+\\i*" S(VEC_BYTES) "(%rdi), %ymm\\i\n"
	"	.endr\n"
	"	ucall_and_x87_store\n"
	"	.irp i,0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15\n"
	"	vmovdqu %ymm\\i, " S(OFF_VEC) "+\\i*" S(VEC_BYTES) "(%rsi)\n"
	"	.endr\n"
	"	vzeroupper\n"
	"	ret\n"

	".globl fpu_roundtrip_avx512\n"
	"fpu_roundtrip_avx512:\n"
	"	x87_load\n"
	"	.irp i,0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31\n"
	"	vmovdqu64 " S(OFF_VEC) "+\\i*" S(VEC_BYTES) "(%rdi), %zmm\\i\n"
	"	.endr\n"
	"	.irp i,0,1,2,3,4,5,6,7\n"
	"	kmovw " S(OFF_K) "+\\i*8(%rdi), %k\\i\n"
	"	.endr\n"
	"	ucall_and_x87_store\n"
	"	.irp i,0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31\n"
	"	vmovdqu64 %zmm\\i, " S(OFF_VEC) "+\\i*" S(VEC_BYTES) "(%rsi)\n"
	"	.endr\n"
	"	.irp i,0,1,2,3,4,5,6,7\n"
	"	kmovw %k\\i, " S(OFF_K) "+\\i*8(%rsi)\n"
	"	.endr\n"
	"	vzeroupper\n"
	"	ret\n");

static struct fpu_regs want, got;

static enum level detect_level(void)
{
	uint64_t xcr0 = guest_xcr0();
	struct cpuid_regs l1 = cpuid(1, 0), l7 = cpuid(7, 0);
	bool avx = (l1.ecx >> 28) & 1, avx512f = (l7.ebx >> 16) & 1;

	if (avx && avx512f && (xcr0 & 0xe6) == 0xe6)
		return LEVEL_AVX512;
	if (avx && (xcr0 & 0x6) == 0x6)
		return LEVEL_AVX;
	return LEVEL_SSE;
}

/* Register bytes the level really round-trips: xmm 16 B, ymm 32 B, zmm 64 B. */
static void level_shape(enum level l, unsigned *regs, unsigned *bytes)
{
	*regs = l == LEVEL_AVX512 ? 32 : 16;
	*bytes = l == LEVEL_SSE ? 16 : l == LEVEL_AVX ? 32 : 64;
}

static void make_pattern(struct fpu_regs *r, uint64_t stage)
{
	memset(r, 0, sizeof(*r));
	for (unsigned i = 0; i < 8; i++) {
		/* an integer below 2^52: exact as a double and as an 80-bit x87 value */
		double d = (double)(mix64(stage * 100 + i) >> 12) + 0.5;

		memcpy(&r->x87[i], &d, sizeof(d));
		r->k[i] = mix64(stage * 300 + i) & 0xffff; /* kmovw: 16 bits on AVX-512F */
	}
	r->fcw = (uint16_t)(0x037f | ((stage & 3) << 10));       /* rounding control */
	r->mxcsr = 0x1f80 | (uint32_t)((stage & 3) << 13) | ((stage & 1) ? 0x8000 : 0); /* RC, FZ */
	for (unsigned v = 0; v < VEC_REGS; v++)
		for (unsigned b = 0; b < VEC_BYTES; b += 8) {
			uint64_t w = mix64((stage << 32) | (v << 8) | b);

			memcpy(&r->vec[v][b], &w, 8);
		}
}

static uint64_t first_word(const uint8_t *p)
{
	uint64_t w;

	memcpy(&w, p, 8);
	return w;
}

static void check(enum level l, uint64_t stage)
{
	static const char *const names[] = { "xmm", "ymm", "zmm" };
	unsigned regs, bytes;

	GUEST_ASSERT_MSG(got.fcw == want.fcw, "stage %lu: x87 control word 0x%x, expected 0x%x",
			 stage, got.fcw, want.fcw);
	GUEST_ASSERT_MSG(got.fsw == got.fsw_before, "stage %lu: x87 status word 0x%x, was 0x%x",
			 stage, got.fsw, got.fsw_before);
	GUEST_ASSERT_MSG(got.mxcsr == want.mxcsr, "stage %lu: MXCSR 0x%x, expected 0x%x", stage,
			 got.mxcsr, want.mxcsr);
	for (unsigned i = 0; i < 8; i++)
		GUEST_ASSERT_MSG(got.x87[i] == want.x87[i],
				 "stage %lu: st(%u) bits 0x%lx, expected 0x%lx", stage, i,
				 got.x87[i], want.x87[i]);
	level_shape(l, &regs, &bytes);
	for (unsigned v = 0; v < regs; v++)
		for (unsigned b = 0; b < bytes; b += 16)
			GUEST_ASSERT_MSG(!memcmp(&got.vec[v][b], &want.vec[v][b], 16),
					 "stage %lu: %s%u bytes %u..%u differ: 0x%lx.., expected 0x%lx..",
					 stage, names[l], v, b, b + 15, first_word(&got.vec[v][b]),
					 first_word(&want.vec[v][b]));
	if (l == LEVEL_AVX512)
		for (unsigned i = 0; i < 8; i++)
			GUEST_ASSERT_MSG(got.k[i] == want.k[i], "stage %lu: k%u 0x%lx, expected 0x%lx",
					 stage, i, got.k[i], want.k[i]);
}

static const char *const level_names[] = { "sse", "avx", "avx512" };

/* `level=sse|avx|avx512` caps the level, so every path can be exercised. */
static enum level choose_level(void)
{
	enum level have = detect_level();
	char want_name[16];
	int ret = cmdline_get_str("level", want_name, sizeof(want_name));

	if (ret == -ENOENT)
		return have;
	for (unsigned l = LEVEL_SSE; l <= LEVEL_AVX512; l++) {
		if (ret || strcmp(want_name, level_names[l]))
			continue;
		GUEST_ASSERT_MSG(l <= have, "level=%s requested, but only %s is enabled",
				 want_name, level_names[have]);
		return (enum level)l;
	}
	GUEST_ASSERT_MSG(false, "level=: expected sse, avx or avx512");
	return have;
}

void guest_main(void)
{
	enum level l = choose_level();

	guest_print("fpu: testing %s (xcr0 0x%lx) over %d syncs\n", level_names[l], guest_xcr0(),
		    STAGES);
	for (uint64_t stage = 1; stage <= STAGES; stage++) {
		struct ember_ucall uc = { .cmd = EMBER_UCALL_SYNC, .args = { stage } };
		uint32_t gpa = (uint32_t)(uintptr_t)&uc;

		make_pattern(&want, stage);
		memset(&got, 0, sizeof(got));
		if (l == LEVEL_AVX512)
			fpu_roundtrip_avx512(&want, &got, gpa);
		else if (l == LEVEL_AVX)
			fpu_roundtrip_avx(&want, &got, gpa);
		else
			fpu_roundtrip_sse(&want, &got, gpa);
		check(l, stage);
	}
	guest_print("fpu: %s state intact after %d syncs\n", level_names[l], STAGES);
	GUEST_DONE();
}
