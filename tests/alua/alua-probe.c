/*
 * alua-probe: a libiscsi client that logs in once and runs a list of SCSI commands on that one
 * session, printing one parseable line per result. The ALUA end-to-end tests drive it (through
 * tests/src/alua_probe.rs) to check REPORT TARGET PORT GROUPS, the per-port sense codes and the
 * unit attentions every I_T nexus gets when the port group states change.
 *
 * Usage: alua-probe [--initiator IQN] [--timeout MS] [--block-size N] iscsi://HOST:PORT/TARGET/LUN CMD...
 *   --initiator  initiator name (default iqn.2026-11.org.example:alua-probe)
 *   --timeout    how long one SCSI command may take before the session counts as lost (default 10000)
 *   --block-size block size for read/write until a `readcap` in the same run reports one (default 512)
 *   CHAP: iscsi://USER%SECRET@HOST..., mutual CHAP from LIBISCSI_CHAP_TARGET_USERNAME/PASSWORD.
 *
 * Commands (numbers are decimal unless noted; BYTE accepts 0x.. too; ASC/ASCQ/KEY are hex):
 *   tur                       TEST UNIT READY
 *   inq                       standard INQUIRY
 *   vpd83                     INQUIRY VPD 0x83 (device identification)
 *   rtpg                      REPORT TARGET PORT GROUPS asking for the extended header
 *   rtpg-len                  REPORT TARGET PORT GROUPS asking for the length-only header
 *   readcap                   READ CAPACITY(16)
 *   read LBA                  READ(10) of one block
 *   write LBA BYTE            WRITE(10) of one block filled with BYTE
 *   sleep MS                  no SCSI command: wait, still answering the target's NOP-Ins
 *   until-ua ASC ASCQ MS      TEST UNIT READY every 50 ms until a UNIT ATTENTION ASC/ASCQ, at most MS
 *   until-check KEY ASC ASCQ MS   the same for any CHECK CONDITION KEY/ASC/ASCQ
 *   until-ok CMD [ARGS] MS    repeat CMD (tur inq vpd83 rtpg rtpg-len readcap read write) every 50 ms
 *                             until it succeeds, at most MS
 *
 * Output (stdout, line buffered). SEQ is 0 for the login, then the 1-based index of the command.
 *   line    = SEQ " " NAME " " result
 *   result  = "ok" *(" " KEY "=" VALUE)        GOOD status; VALUE never contains a space
 *           | "check " KK " " AA " " QQ        CHECK CONDITION: sense key, ASC, ASCQ, 2 lowercase hex digits
 *           | "status " HH                     another SCSI status (hex), e.g. 18 reservation conflict
 *           | "error " TEXT                    libiscsi or local error, free text to the end of the line
 *           | "timeout" *(" " KEY "=" VALUE)   an until-* command ran out of time
 *           | "saw " (ok ... | check ... | status ... | error ...)   until-* only: an intermediate result
 *                                              that did not match (error: bad data, not a lost session);
 *                                              printed only when it differs from the previous one
 *   Login:   0 login ok | 0 login error TEXT
 *   tur:     ok
 *   inq:     ok type=HH vendor=S product=S rev=S tpgs=N      (spaces inside S become '_', empty is '-')
 *   vpd83:   ok rtpi=N tpg=N lu=naa:HEX|eui:HEX|- port_name=S target_name=S   (missing is '-')
 *   rtpg, rtpg-len:
 *            ok format=ext|len tt=N groups=N      (tt: implicit transition time, '-' for len)
 *            followed by N lines: SEQ " tpg id=N state=ST pref=0|1 sup=ST,ST..|- status=N ports=N,N..|-"
 *            ST: ao an s u lbd o t, or xH for another value. `format` is what the target returned
 *            (byte 4 FORMAT TYPE); a target refusing the extended request with 05/24/00 is asked again
 *            length-only.
 *   readcap: ok blocks=N block_size=N
 *   read:    ok lba=N fill=HH|mixed fnv=HHHHHHHHHHHHHHHH head=HEX   (fnv: FNV-1a 64 of the block,
 *            head: its first 16 bytes)
 *   write:   ok lba=N byte=HH
 *   sleep:   ok ms=N
 *   until-ua, until-check: ok sense=KK/AA/QQ ms=N tries=N | timeout ms=N tries=N
 *   until-ok: ok ms=N tries=N <the inner command's KEY=VALUE pairs> (+ tpg lines for rtpg)
 *            | timeout ms=N tries=N
 *
 * Exit status: 0 every command ran (CHECK CONDITIONs included), 1 connect or login failed, 2 usage,
 * 3 the session was lost (connection closed, command cancelled, or no answer within --timeout): the
 * failing command printed `error` and the remaining commands did not run.
 *
 * Why not libiscsi's iscsi_full_connect_sync: it sends TEST UNIT READY after the login, swallows one
 * UNIT ATTENTION 29/00 and fails the whole connect on any other CHECK CONDITION (a Standby port
 * answers NOT READY 04/0B). Here the login is iscsi_connect_sync + iscsi_login_sync, so the first
 * command of a fresh nexus sees 29/00 itself. Automatic reconnect is off (iscsi_set_noautoreconnect):
 * a dropped connection cancels the command in flight instead of silently logging in again, which
 * would both hide the drop and swallow unit attentions. Commands run through the async API and our
 * own poll loop so every wait is bounded.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <iscsi/iscsi.h>
#include <iscsi/scsi-lowlevel.h>

#define DEFAULT_INITIATOR "iqn.2026-11.org.example:alua-probe"
#define POLL_STEP_MS 50
#define DETAIL_MAX 1024
#define EXTRA_MAX 8192

enum cmd_kind {
	C_TUR, C_INQ, C_VPD83, C_RTPG, C_RTPG_LEN, C_READCAP, C_READ, C_WRITE,
	C_SLEEP, C_UNTIL_UA, C_UNTIL_CHECK, C_UNTIL_OK
};

struct cmd {
	enum cmd_kind kind;
	const char *name;
	long lba;
	int byte;
	long ms;
	int key, asc, ascq;
	struct cmd *inner; /* until-ok */
};

/* What one SCSI command produced. */
enum res_kind { R_OK, R_CHECK, R_STATUS, R_ERROR, R_LOST };

struct result {
	enum res_kind kind;
	int key, asc, ascq, status;
	char detail[DETAIL_MAX];  /* ok: KEY=VALUE pairs; error/lost: message */
	char extra[EXTRA_MAX];    /* lines printed after the result line (rtpg groups), each "tpg ...\n" */
};

static struct iscsi_context *iscsi;
static int lun;
static long cmd_timeout_ms = 10000;
static uint32_t block_size = 512;

static void usage(const char *why)
{
	fprintf(stderr, "alua-probe: %s\n"
		"usage: alua-probe [--initiator IQN] [--timeout MS] [--block-size N] "
		"iscsi://HOST:PORT/TARGET/LUN CMD...\n"
		"commands: tur inq vpd83 rtpg rtpg-len readcap 'read LBA' 'write LBA BYTE' 'sleep MS'\n"
		"          'until-ua ASC ASCQ MS' 'until-check KEY ASC ASCQ MS' 'until-ok CMD [ARGS] MS'\n", why);
	exit(2);
}

static long now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000 };
	while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
	}
}

/*
 * One bounded turn of the event loop: waits up to `ms` for the socket and lets libiscsi process what
 * arrived (answers, NOP-In pings). Returns -1 with `err` set when the connection failed.
 */
static int service_once(long ms, char *err, size_t cap)
{
	struct pollfd p;
	int n;
	p.fd = iscsi_get_fd(iscsi);
	p.events = (short)iscsi_which_events(iscsi);
	p.revents = 0;
	if (p.fd < 0) {
		snprintf(err, cap, "connection closed: %s", iscsi_get_error(iscsi));
		return -1;
	}
	if (p.events == 0) {
		sleep_ms(ms);
		return 0;
	}
	n = poll(&p, 1, (int)ms);
	if (n < 0) {
		if (errno == EINTR) {
			return 0;
		}
		snprintf(err, cap, "poll: %s", strerror(errno));
		return -1;
	}
	if (iscsi_service(iscsi, n > 0 ? p.revents : 0) < 0) {
		snprintf(err, cap, "connection failed: %s", iscsi_get_error(iscsi));
		return -1;
	}
	return 0;
}

/* Waits `ms` while keeping the session serviced (a plain sleep would leave NOP-Ins unanswered). */
static int idle(long ms, char *err, size_t cap)
{
	long end = now_ms() + ms, left;
	while ((left = end - now_ms()) > 0) {
		if (service_once(left < POLL_STEP_MS ? left : POLL_STEP_MS, err, cap) < 0) {
			return -1;
		}
	}
	return 0;
}

static void append(char *buf, size_t cap, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void append(char *buf, size_t cap, const char *fmt, ...)
{
	size_t len = strlen(buf);
	va_list ap;
	if (len + 1 >= cap) {
		return;
	}
	va_start(ap, fmt);
	vsnprintf(buf + len, cap - len, fmt, ap);
	va_end(ap);
}

/* ---- argument parsing ------------------------------------------------------------------------ */

static long parse_num(const char *s, int base, long min, long max, const char *what)
{
	char *end;
	long v;
	errno = 0;
	v = strtol(s, &end, base);
	if (errno != 0 || end == s || *end != '\0' || v < min || v > max) {
		char msg[256];
		snprintf(msg, sizeof msg, "bad %s `%s` (expected %ld..%ld%s)", what, s, min, max,
			 base == 16 ? ", hex" : "");
		usage(msg);
	}
	return v;
}

static const char *need(char **argv, int argc, int i, const char *cmd)
{
	if (i >= argc) {
		char msg[128];
		snprintf(msg, sizeof msg, "`%s` is missing an argument", cmd);
		usage(msg);
	}
	return argv[i];
}

/* Parses one command starting at argv[*i]; advances *i past its arguments. */
static void parse_cmd(char **argv, int argc, int *i, struct cmd *c, int nested)
{
	const char *w = argv[*i];
	memset(c, 0, sizeof *c);
	c->name = w;
	(*i)++;
	if (!strcmp(w, "tur")) {
		c->kind = C_TUR;
	} else if (!strcmp(w, "inq")) {
		c->kind = C_INQ;
	} else if (!strcmp(w, "vpd83")) {
		c->kind = C_VPD83;
	} else if (!strcmp(w, "rtpg")) {
		c->kind = C_RTPG;
	} else if (!strcmp(w, "rtpg-len")) {
		c->kind = C_RTPG_LEN;
	} else if (!strcmp(w, "readcap")) {
		c->kind = C_READCAP;
	} else if (!strcmp(w, "read")) {
		c->kind = C_READ;
		c->lba = parse_num(need(argv, argc, (*i)++, w), 10, 0, 0xFFFFFFFFL, "LBA");
	} else if (!strcmp(w, "write")) {
		c->kind = C_WRITE;
		c->lba = parse_num(need(argv, argc, (*i)++, w), 10, 0, 0xFFFFFFFFL, "LBA");
		c->byte = (int)parse_num(need(argv, argc, (*i)++, w), 0, 0, 255, "BYTE");
	} else if (!nested && !strcmp(w, "sleep")) {
		c->kind = C_SLEEP;
		c->ms = parse_num(need(argv, argc, (*i)++, w), 10, 0, 3600000, "MS");
	} else if (!nested && !strcmp(w, "until-ua")) {
		c->kind = C_UNTIL_UA;
		c->key = 6;
		c->asc = (int)parse_num(need(argv, argc, (*i)++, w), 16, 0, 255, "ASC");
		c->ascq = (int)parse_num(need(argv, argc, (*i)++, w), 16, 0, 255, "ASCQ");
		c->ms = parse_num(need(argv, argc, (*i)++, w), 10, 0, 3600000, "MS");
	} else if (!nested && !strcmp(w, "until-check")) {
		c->kind = C_UNTIL_CHECK;
		c->key = (int)parse_num(need(argv, argc, (*i)++, w), 16, 0, 15, "KEY");
		c->asc = (int)parse_num(need(argv, argc, (*i)++, w), 16, 0, 255, "ASC");
		c->ascq = (int)parse_num(need(argv, argc, (*i)++, w), 16, 0, 255, "ASCQ");
		c->ms = parse_num(need(argv, argc, (*i)++, w), 10, 0, 3600000, "MS");
	} else if (!nested && !strcmp(w, "until-ok")) {
		c->kind = C_UNTIL_OK;
		c->inner = calloc(1, sizeof *c->inner);
		if (c->inner == NULL) {
			usage("out of memory");
		}
		need(argv, argc, *i, w);
		parse_cmd(argv, argc, i, c->inner, 1);
		c->ms = parse_num(need(argv, argc, (*i)++, w), 10, 0, 3600000, "MS");
	} else {
		char msg[128];
		snprintf(msg, sizeof msg, "unknown %scommand `%s`", nested ? "until-ok " : "", w);
		usage(msg);
	}
}

/* ---- running one SCSI command ---------------------------------------------------------------- */

struct waiter {
	int done;
	int status;
};

static void command_cb(struct iscsi_context *ctx, int status, void *command_data, void *private_data)
{
	struct waiter *w = private_data;
	(void)ctx;
	(void)command_data;
	w->done = 1;
	w->status = status;
}

/*
 * Sends `cdb` and waits (bounded) for its status. On R_OK the caller reads task->datain and frees
 * the task; on every other kind the task is already freed (or, on R_LOST, abandoned in flight).
 */
static struct scsi_task *run_cdb(const unsigned char *cdb, int cdb_len, int dir, int xfer_len,
				 unsigned char *out, struct result *r)
{
	struct waiter w = { 0, 0 };
	struct iscsi_data data = { 0, NULL };
	struct scsi_task *task;
	long deadline = now_ms() + cmd_timeout_ms;

	memset(r, 0, sizeof *r);
	task = scsi_create_task(cdb_len, (unsigned char *)cdb, dir, xfer_len);
	if (task == NULL) {
		r->kind = R_ERROR;
		snprintf(r->detail, sizeof r->detail, "out of memory creating the task");
		return NULL;
	}
	if (out != NULL) {
		data.size = xfer_len;
		data.data = out;
	}
	if (iscsi_scsi_command_async(iscsi, lun, task, command_cb, out ? &data : NULL, &w) != 0) {
		r->kind = R_LOST;
		snprintf(r->detail, sizeof r->detail, "cannot send: %s", iscsi_get_error(iscsi));
		scsi_free_scsi_task(task);
		return NULL;
	}
	while (!w.done) {
		long left = deadline - now_ms();
		if (left <= 0) {
			r->kind = R_LOST;
			snprintf(r->detail, sizeof r->detail, "no response within %ld ms", cmd_timeout_ms);
			return NULL;
		}
		if (service_once(left < POLL_STEP_MS ? left : POLL_STEP_MS, r->detail, sizeof r->detail) < 0) {
			/* The callback may have run with CANCELLED inside iscsi_service: same outcome. */
			r->kind = R_LOST;
			return NULL;
		}
	}
	switch (w.status) {
	case SCSI_STATUS_GOOD:
		r->kind = R_OK;
		return task;
	case SCSI_STATUS_CHECK_CONDITION:
		r->kind = R_CHECK;
		r->key = task->sense.key & 0x0f;
		r->asc = (task->sense.ascq >> 8) & 0xff;
		r->ascq = task->sense.ascq & 0xff;
		break;
	case SCSI_STATUS_CANCELLED:
		r->kind = R_LOST;
		snprintf(r->detail, sizeof r->detail, "cancelled (session dropped): %s", iscsi_get_error(iscsi));
		break;
	case SCSI_STATUS_ERROR:
	case SCSI_STATUS_TIMEOUT:
		r->kind = R_LOST;
		snprintf(r->detail, sizeof r->detail, "%s", iscsi_get_error(iscsi));
		break;
	default:
		r->kind = R_STATUS;
		r->status = w.status & 0xff;
		break;
	}
	scsi_free_scsi_task(task);
	return NULL;
}

static uint16_t be16(const unsigned char *p)
{
	return (uint16_t)((p[0] << 8) | p[1]);
}

static uint32_t be32(const unsigned char *p)
{
	return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

static uint64_t be64(const unsigned char *p)
{
	return ((uint64_t)be32(p) << 32) | be32(p + 4);
}

static void put_be32(unsigned char *p, uint32_t v)
{
	p[0] = (unsigned char)(v >> 24);
	p[1] = (unsigned char)(v >> 16);
	p[2] = (unsigned char)(v >> 8);
	p[3] = (unsigned char)v;
}

/* ASCII field → one token: trailing blanks dropped, inner blanks and non-printables become '_'. */
static void token(char *dst, size_t cap, const unsigned char *src, size_t len)
{
	size_t n = len, i;
	while (n > 0 && (src[n - 1] == ' ' || src[n - 1] == '\0')) {
		n--;
	}
	if (n == 0 || cap < 2) {
		snprintf(dst, cap, "-");
		return;
	}
	if (n > cap - 1) {
		n = cap - 1;
	}
	for (i = 0; i < n; i++) {
		dst[i] = (src[i] > ' ' && src[i] < 0x7f) ? (char)src[i] : '_';
	}
	dst[n] = '\0';
}

static void do_tur(struct result *r)
{
	unsigned char cdb[6] = { 0 };
	struct scsi_task *t = run_cdb(cdb, 6, SCSI_XFER_NONE, 0, NULL, r);
	if (t) {
		scsi_free_scsi_task(t);
	}
}

static struct scsi_task *inquiry(int evpd, int page, int alloc, struct result *r)
{
	unsigned char cdb[6] = { 0x12, (unsigned char)evpd, (unsigned char)page,
				 (unsigned char)(alloc >> 8), (unsigned char)alloc, 0 };
	return run_cdb(cdb, 6, SCSI_XFER_READ, alloc, NULL, r);
}

static void do_inq(struct result *r)
{
	char vendor[32], product[32], rev[16];
	struct scsi_task *t = inquiry(0, 0, 96, r);
	unsigned char *d;
	if (!t) {
		return;
	}
	d = t->datain.data;
	if (t->datain.size < 36) {
		r->kind = R_ERROR;
		snprintf(r->detail, sizeof r->detail, "short INQUIRY data: %d bytes", t->datain.size);
	} else {
		token(vendor, sizeof vendor, d + 8, 8);
		token(product, sizeof product, d + 16, 16);
		token(rev, sizeof rev, d + 32, 4);
		snprintf(r->detail, sizeof r->detail, "type=%02x vendor=%s product=%s rev=%s tpgs=%d",
			 d[0] & 0x1f, vendor, product, rev, (d[5] >> 4) & 0x3);
	}
	scsi_free_scsi_task(t);
}

static void do_vpd83(struct result *r)
{
	char lu[80] = "-", port_name[300] = "-", target_name[300] = "-";
	long rtpi = -1, tpg = -1;
	struct scsi_task *t = inquiry(1, 0x83, 4096, r);
	unsigned char *d;
	int len, off;
	if (!t) {
		return;
	}
	d = t->datain.data;
	if (t->datain.size < 4 || d[1] != 0x83) {
		r->kind = R_ERROR;
		snprintf(r->detail, sizeof r->detail, "not a VPD 0x83 page (%d bytes)", t->datain.size);
		scsi_free_scsi_task(t);
		return;
	}
	len = 4 + be16(d + 2);
	if (len > t->datain.size) {
		len = t->datain.size;
	}
	for (off = 4; off + 4 <= len; off += 4 + d[off + 3]) {
		const unsigned char *v = d + off + 4;
		int vlen = d[off + 3], assoc = (d[off + 1] >> 4) & 3, type = d[off + 1] & 0x0f, i;
		if (off + 4 + vlen > len) {
			break;
		}
		if (assoc == 0 && (type == 3 || type == 2) && (lu[0] == '-' || (type == 3 && lu[0] == 'e'))) {
			snprintf(lu, sizeof lu, "%s:", type == 3 ? "naa" : "eui");
			for (i = 0; i < vlen && i < 32; i++) {
				append(lu, sizeof lu, "%02x", v[i]);
			}
		} else if (assoc == 1 && type == 4 && vlen >= 4) {
			rtpi = be16(v + 2);
		} else if (assoc == 1 && type == 5 && vlen >= 4) {
			tpg = be16(v + 2);
		} else if (type == 8 && (assoc == 1 || assoc == 2)) {
			char *dst = assoc == 1 ? port_name : target_name;
			token(dst, 300, v, strnlen((const char *)v, (size_t)vlen));
		}
	}
	snprintf(r->detail, sizeof r->detail, "rtpi=");
	if (rtpi >= 0) {
		append(r->detail, sizeof r->detail, "%ld", rtpi);
	} else {
		append(r->detail, sizeof r->detail, "-");
	}
	append(r->detail, sizeof r->detail, " tpg=");
	if (tpg >= 0) {
		append(r->detail, sizeof r->detail, "%ld", tpg);
	} else {
		append(r->detail, sizeof r->detail, "-");
	}
	append(r->detail, sizeof r->detail, " lu=%s port_name=%s target_name=%s", lu, port_name, target_name);
	scsi_free_scsi_task(t);
}

static const char *state_name(int aas, char *buf, size_t cap)
{
	switch (aas) {
	case 0x0: return "ao";
	case 0x1: return "an";
	case 0x2: return "s";
	case 0x3: return "u";
	case 0x4: return "lbd";
	case 0xe: return "o";
	case 0xf: return "t";
	default:
		snprintf(buf, cap, "x%x", aas);
		return buf;
	}
}

/* Parses REPORT TARGET PORT GROUPS data (SPC-4 6.37), either header format. */
static void parse_rtpg(const unsigned char *d, int size, struct result *r)
{
	static const struct { int bit; const char *name; } sup[] = {
		{ 0x01, "ao" }, { 0x02, "an" }, { 0x04, "s" }, { 0x08, "u" },
		{ 0x10, "lbd" }, { 0x40, "o" }, { 0x80, "t" },
	};
	int extended, end, off, groups = 0;
	char tt[8] = "-";
	if (size < 4) {
		r->kind = R_ERROR;
		snprintf(r->detail, sizeof r->detail, "short RTPG data: %d bytes", size);
		return;
	}
	end = 4 + (int)be32(d);
	if (end > size) {
		end = size;
	}
	extended = size >= 8 && ((d[4] >> 4) & 7) == 1;
	off = 4;
	if (extended) {
		snprintf(tt, sizeof tt, "%d", d[5]);
		off = 8;
	}
	while (off + 8 <= end) {
		const unsigned char *g = d + off;
		int count = g[7], i, any = 0;
		char buf[8];
		if (off + 8 + 4 * count > end) {
			r->kind = R_ERROR;
			snprintf(r->detail, sizeof r->detail, "RTPG descriptor at %d overruns the data (%d ports)",
				 off, count);
			return;
		}
		append(r->extra, sizeof r->extra, "tpg id=%u state=%s pref=%d sup=", be16(g + 2),
		       state_name(g[0] & 0x0f, buf, sizeof buf), (g[0] >> 7) & 1);
		for (i = 0; i < (int)(sizeof sup / sizeof sup[0]); i++) {
			if (g[1] & sup[i].bit) {
				append(r->extra, sizeof r->extra, "%s%s", any++ ? "," : "", sup[i].name);
			}
		}
		append(r->extra, sizeof r->extra, "%s status=%d ports=", any ? "" : "-", g[5]);
		for (i = 0; i < count; i++) {
			append(r->extra, sizeof r->extra, "%s%u", i ? "," : "", be16(g + 8 + 4 * i + 2));
		}
		append(r->extra, sizeof r->extra, "%s\n", count ? "" : "-");
		off += 8 + 4 * count;
		groups++;
	}
	snprintf(r->detail, sizeof r->detail, "format=%s tt=%s groups=%d", extended ? "ext" : "len", tt, groups);
}

static struct scsi_task *rtpg_cdb(int extended, uint32_t alloc, struct result *r)
{
	unsigned char cdb[12] = { 0xA3, (unsigned char)((extended ? 0x20 : 0) | 0x0A) };
	put_be32(cdb + 6, alloc);
	return run_cdb(cdb, 12, SCSI_XFER_READ, (int)alloc, NULL, r);
}

static void do_rtpg(int extended, struct result *r)
{
	uint32_t alloc = 1024;
	struct scsi_task *t = rtpg_cdb(extended, alloc, r);
	if (!t && extended && r->kind == R_CHECK && r->key == 5 && r->asc == 0x24 && r->ascq == 0) {
		extended = 0; /* INVALID FIELD IN CDB: the target only knows the length-only format */
		t = rtpg_cdb(0, alloc, r);
	}
	if (t && t->datain.size >= 4 && 4 + be32(t->datain.data) > alloc) {
		alloc = 4 + be32(t->datain.data); /* the whole list did not fit: ask once more */
		if (alloc > 65536) {
			alloc = 65536;
		}
		scsi_free_scsi_task(t);
		t = rtpg_cdb(extended, alloc, r);
	}
	if (!t) {
		return;
	}
	parse_rtpg(t->datain.data, t->datain.size, r);
	scsi_free_scsi_task(t);
}

static void do_readcap(struct result *r)
{
	unsigned char cdb[16] = { 0x9E, 0x10 };
	struct scsi_task *t;
	put_be32(cdb + 10, 32);
	t = run_cdb(cdb, 16, SCSI_XFER_READ, 32, NULL, r);
	if (!t) {
		return;
	}
	if (t->datain.size < 12) {
		r->kind = R_ERROR;
		snprintf(r->detail, sizeof r->detail, "short READ CAPACITY(16) data: %d bytes", t->datain.size);
	} else {
		block_size = be32(t->datain.data + 8);
		snprintf(r->detail, sizeof r->detail, "blocks=%llu block_size=%u",
			 (unsigned long long)(be64(t->datain.data) + 1), block_size);
	}
	scsi_free_scsi_task(t);
}

static void rw10_cdb(unsigned char *cdb, unsigned char op, long lba)
{
	memset(cdb, 0, 10);
	cdb[0] = op;
	put_be32(cdb + 2, (uint32_t)lba);
	cdb[8] = 1;
}

static void do_read(long lba, struct result *r)
{
	unsigned char cdb[10];
	struct scsi_task *t;
	uint64_t fnv = 0xcbf29ce484222325ULL;
	int i, same = 1;
	rw10_cdb(cdb, 0x28, lba);
	t = run_cdb(cdb, 10, SCSI_XFER_READ, (int)block_size, NULL, r);
	if (!t) {
		return;
	}
	if (t->datain.size != (int)block_size) {
		r->kind = R_ERROR;
		snprintf(r->detail, sizeof r->detail, "read %d bytes, expected one block of %u",
			 t->datain.size, block_size);
		scsi_free_scsi_task(t);
		return;
	}
	for (i = 0; i < t->datain.size; i++) {
		fnv = (fnv ^ t->datain.data[i]) * 0x100000001b3ULL;
		same &= t->datain.data[i] == t->datain.data[0];
	}
	snprintf(r->detail, sizeof r->detail, "lba=%ld fill=", lba);
	if (same) {
		append(r->detail, sizeof r->detail, "%02x", t->datain.data[0]);
	} else {
		append(r->detail, sizeof r->detail, "mixed");
	}
	append(r->detail, sizeof r->detail, " fnv=%016llx head=", (unsigned long long)fnv);
	for (i = 0; i < 16 && i < t->datain.size; i++) {
		append(r->detail, sizeof r->detail, "%02x", t->datain.data[i]);
	}
	scsi_free_scsi_task(t);
}

static void do_write(long lba, int byte, struct result *r)
{
	unsigned char cdb[10];
	unsigned char *buf = malloc(block_size);
	struct scsi_task *t;
	if (buf == NULL) {
		memset(r, 0, sizeof *r);
		r->kind = R_ERROR;
		snprintf(r->detail, sizeof r->detail, "out of memory for a %u byte block", block_size);
		return;
	}
	memset(buf, byte, block_size);
	rw10_cdb(cdb, 0x2A, lba);
	t = run_cdb(cdb, 10, SCSI_XFER_WRITE, (int)block_size, buf, r);
	if (t) {
		snprintf(r->detail, sizeof r->detail, "lba=%ld byte=%02x", lba, byte);
		scsi_free_scsi_task(t);
	}
	/* On R_LOST the task may still reference buf; the process exits right after, so keep it. */
	if (r->kind != R_LOST) {
		free(buf);
	}
}

static void run_scsi(const struct cmd *c, struct result *r)
{
	switch (c->kind) {
	case C_TUR: do_tur(r); break;
	case C_INQ: do_inq(r); break;
	case C_VPD83: do_vpd83(r); break;
	case C_RTPG: do_rtpg(1, r); break;
	case C_RTPG_LEN: do_rtpg(0, r); break;
	case C_READCAP: do_readcap(r); break;
	case C_READ: do_read(c->lba, r); break;
	case C_WRITE: do_write(c->lba, c->byte, r); break;
	default:
		memset(r, 0, sizeof *r);
		r->kind = R_ERROR;
		snprintf(r->detail, sizeof r->detail, "not a SCSI command");
	}
}

/* ---- printing -------------------------------------------------------------------------------- */

/* libiscsi's messages may end in a newline: keep every result on one line. */
static const char *one_line(char *s)
{
	size_t n;
	for (n = 0; s[n]; n++) {
		if (s[n] == '\n' || s[n] == '\r' || s[n] == '\t') {
			s[n] = ' ';
		}
	}
	while (n > 0 && s[n - 1] == ' ') {
		s[--n] = '\0';
	}
	return s;
}

static const char *last_error(void)
{
	static char buf[DETAIL_MAX];
	snprintf(buf, sizeof buf, "%s", iscsi_get_error(iscsi));
	return one_line(buf);
}

/* The result word and its fields, without SEQ/NAME: "ok ...", "check ..", "status ..", "error ..". */
static void format_result(const struct result *r, char *out, size_t cap)
{
	switch (r->kind) {
	case R_OK:
		snprintf(out, cap, "ok%s%s", r->detail[0] ? " " : "", r->detail);
		break;
	case R_CHECK:
		snprintf(out, cap, "check %02x %02x %02x", r->key, r->asc, r->ascq);
		break;
	case R_STATUS:
		snprintf(out, cap, "status %02x", r->status);
		break;
	case R_ERROR:
	case R_LOST:
		snprintf(out, cap, "error %s", r->detail);
		one_line(out);
		break;
	}
}

static void print_extra(int seq, const char *extra)
{
	const char *p = extra;
	while (*p) {
		const char *nl = strchr(p, '\n');
		int n = nl ? (int)(nl - p) : (int)strlen(p);
		printf("%d %.*s\n", seq, n, p);
		p += n + (nl ? 1 : 0);
	}
}

static void print_result(int seq, const char *name, const struct result *r)
{
	char line[DETAIL_MAX + 64];
	format_result(r, line, sizeof line);
	printf("%d %s %s\n", seq, name, line);
	if (r->kind == R_OK) {
		print_extra(seq, r->extra);
	}
}

/* until-*: repeats `attempt` every POLL_STEP_MS; returns 1 matched, 0 timed out, -1 lost. */
static int run_until(int seq, const struct cmd *c)
{
	static struct result r;
	char last[DETAIL_MAX + 64] = "", cur[DETAIL_MAX + 64];
	long start = now_ms();
	int tries = 0;
	for (;;) {
		int matched;
		long elapsed;
		tries++;
		if (c->kind == C_UNTIL_OK) {
			run_scsi(c->inner, &r);
		} else {
			do_tur(&r);
		}
		if (r.kind == R_LOST) {
			print_result(seq, c->name, &r);
			return -1;
		}
		if (c->kind == C_UNTIL_OK) {
			matched = r.kind == R_OK;
		} else {
			matched = r.kind == R_CHECK && r.key == c->key && r.asc == c->asc && r.ascq == c->ascq;
		}
		if (matched) {
			long ms = now_ms() - start;
			if (c->kind == C_UNTIL_OK) {
				printf("%d %s ok ms=%ld tries=%d%s%s\n", seq, c->name, ms, tries,
				       r.detail[0] ? " " : "", r.detail);
				print_extra(seq, r.extra);
			} else {
				printf("%d %s ok sense=%02x/%02x/%02x ms=%ld tries=%d\n", seq, c->name,
				       r.key, r.asc, r.ascq, ms, tries);
			}
			return 1;
		}
		/* `saw` carries ok/check/status only; a local error (bad data) is reported as such. */
		format_result(&r, cur, sizeof cur);
		if (strcmp(cur, last) != 0) {
			printf("%d %s saw %s\n", seq, c->name, cur);
			memcpy(last, cur, sizeof last);
		}
		elapsed = now_ms() - start;
		if (elapsed >= c->ms) {
			printf("%d %s timeout ms=%ld tries=%d\n", seq, c->name, elapsed, tries);
			return 0;
		}
		/* The last attempt falls at the deadline, so a timeout means "not within MS". */
		if (idle(c->ms - elapsed < POLL_STEP_MS ? c->ms - elapsed : POLL_STEP_MS, r.detail, sizeof r.detail) < 0) {
			printf("%d %s error %s\n", seq, c->name, one_line(r.detail));
			return -1;
		}
	}
}

/* ---- main ------------------------------------------------------------------------------------ */

int main(int argc, char **argv)
{
	const char *initiator = DEFAULT_INITIATOR, *url_text = NULL;
	struct iscsi_url *url;
	struct cmd *cmds;
	int ncmds = 0, i = 1, seq;

	setvbuf(stdout, NULL, _IOLBF, 0);
	while (i < argc && !strncmp(argv[i], "--", 2)) {
		if (!strcmp(argv[i], "--initiator")) {
			initiator = need(argv, argc, i + 1, argv[i]);
		} else if (!strcmp(argv[i], "--timeout")) {
			cmd_timeout_ms = parse_num(need(argv, argc, i + 1, argv[i]), 10, 1, 3600000, "--timeout");
		} else if (!strcmp(argv[i], "--block-size")) {
			block_size = (uint32_t)parse_num(need(argv, argc, i + 1, argv[i]), 10, 1, 1 << 20,
							 "--block-size");
		} else {
			usage("unknown option");
		}
		i += 2;
	}
	if (i >= argc) {
		usage("missing the iscsi:// URL");
	}
	url_text = argv[i++];
	if (i >= argc) {
		usage("no commands");
	}
	cmds = calloc((size_t)argc, sizeof *cmds);
	if (cmds == NULL) {
		usage("out of memory");
	}
	while (i < argc) {
		parse_cmd(argv, argc, &i, &cmds[ncmds++], 0);
	}

	iscsi = iscsi_create_context(initiator);
	if (iscsi == NULL) {
		printf("0 login error cannot create a libiscsi context\n");
		return 1;
	}
	url = iscsi_parse_full_url(iscsi, url_text);
	if (url == NULL) {
		fprintf(stderr, "alua-probe: bad URL `%s`: %s\n", url_text, iscsi_get_error(iscsi));
		exit(2);
	}
	lun = url->lun;
	iscsi_set_noautoreconnect(iscsi, 1);
	iscsi_set_session_type(iscsi, ISCSI_SESSION_NORMAL);
	iscsi_set_header_digest(iscsi, ISCSI_HEADER_DIGEST_NONE_CRC32C);
	iscsi_set_targetname(iscsi, url->target);
	if (url->user[0]) {
		iscsi_set_initiator_username_pwd(iscsi, url->user, url->passwd);
	}
	if (url->target_user[0]) {
		iscsi_set_target_username_pwd(iscsi, url->target_user, url->target_passwd);
	}
	/* libiscsi's own timeout bounds the connect and the login (the sync calls run its event loop). */
	iscsi_set_timeout(iscsi, (int)((cmd_timeout_ms + 999) / 1000));
	if (iscsi_connect_sync(iscsi, url->portal) != 0) {
		printf("0 login error connect %s: %s\n", url->portal, last_error());
		return 1;
	}
	if (iscsi_login_sync(iscsi) != 0) {
		printf("0 login error %s\n", last_error());
		return 1;
	}
	/* Commands are bounded by our own poll loop, not by libiscsi's timeout (which would reconnect). */
	iscsi_set_timeout(iscsi, 0);
	printf("0 login ok\n");

	for (seq = 1; seq <= ncmds; seq++) {
		const struct cmd *c = &cmds[seq - 1];
		static struct result r;
		if (c->kind == C_SLEEP) {
			if (idle(c->ms, r.detail, sizeof r.detail) < 0) {
				printf("%d sleep error %s\n", seq, one_line(r.detail));
				return 3;
			}
			printf("%d sleep ok ms=%ld\n", seq, c->ms);
			continue;
		}
		if (c->kind == C_UNTIL_UA || c->kind == C_UNTIL_CHECK || c->kind == C_UNTIL_OK) {
			if (run_until(seq, c) < 0) {
				return 3;
			}
			continue;
		}
		run_scsi(c, &r);
		print_result(seq, c->name, &r);
		if (r.kind == R_LOST) {
			return 3;
		}
	}
	iscsi_logout_sync(iscsi);
	iscsi_destroy_url(url);
	iscsi_destroy_context(iscsi);
	return 0;
}
