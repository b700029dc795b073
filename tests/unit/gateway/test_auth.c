/* test_auth.c - keys file parsing (with line numbers in every error), the
 * constant-time check over every entry, Bearer parsing, hashing. */
#include "gateway/auth.h"
#include "test.h"

#include <fcntl.h>
#include <unistd.h>

/* SHA-256("abc") and SHA-256("") (FIPS 180-2 test vectors). */
#define H_ABC "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
#define H_EMPTY "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

static int parse(const char *text, gs_auth **a, gs_diag *d)
{
    return gs_auth_parse(text, strlen(text), "keys.txt", a, d);
}

static void test_hash_hex(void)
{
    char h[65];
    GS_ASSERT_OK(gs_auth_hash_hex("abc", 3, h));
    GS_ASSERT_STREQ(h, H_ABC);
    GS_ASSERT_OK(gs_auth_hash_hex("", 0, h));
    GS_ASSERT_STREQ(h, H_EMPTY);
}

static const char good_file[] =
    "# glmserve keys\n"
    "\n"
    "sha256:" H_ABC " name=alice rate=0.5/s burst=10 rpm=60 tpm=100000 streams=4\n"
    "   sha256:BA7816BF8F01CFEA414140DE5DAE2223B00361A396177A9CB410FF61F20015AC\tname=bob\r\n"
    "plain-text-key-1 rate=30/m # trailing comment\n"
    "sha256:" H_EMPTY " rate=0 tpm=0";

static void test_parse_good(void)
{
    gs_auth *a = NULL;
    gs_diag d;
    GS_ASSERT_OK(parse(good_file, &a, &d));
    gs_auth_info info;
    gs_auth_get_info(a, &info);
    GS_ASSERT_EQ(info.n_keys, 4);
    GS_ASSERT_EQ(info.n_plaintext, 1);
    GS_ASSERT_EQ(info.first_plaintext_line, 5);

    const gs_auth_key *k = gs_auth_key_at(a, 0);
    GS_ASSERT_STREQ(k->name, "alice");
    GS_ASSERT_STREQ(k->id, H_ABC);
    GS_ASSERT_EQ(k->line, 3);
    GS_ASSERT_EQ(k->flags, 0);
    GS_ASSERT_EQ(k->limits.set, GS_AUTH_LIM_RATE | GS_AUTH_LIM_BURST | GS_AUTH_LIM_RPM |
                                    GS_AUTH_LIM_TPM | GS_AUTH_LIM_STREAMS);
    GS_ASSERT_EQ(k->limits.rate_mrps, 500);
    GS_ASSERT_EQ(k->limits.burst, 10);
    GS_ASSERT_EQ(k->limits.rpm, 60);
    GS_ASSERT_EQ(k->limits.tpm, 100000);
    GS_ASSERT_EQ(k->limits.streams, 4);

    k = gs_auth_key_at(a, 1); /* upper-case hex, tab, CRLF */
    GS_ASSERT_STREQ(k->name, "bob");
    GS_ASSERT_STREQ(k->id, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ac");
    GS_ASSERT_EQ(k->limits.set, 0);

    k = gs_auth_key_at(a, 2);
    GS_ASSERT_STREQ(k->name, "key-5"); /* default name: the line */
    GS_ASSERT_EQ(k->flags, GS_AUTH_KEY_PLAINTEXT);
    GS_ASSERT_EQ(k->limits.set, GS_AUTH_LIM_RATE);
    GS_ASSERT_EQ(k->limits.rate_mrps, 500); /* 30/m = 500 milli-requests/s */
    char h[65];
    GS_ASSERT_OK(gs_auth_hash_hex("plain-text-key-1", 16, h));
    GS_ASSERT_STREQ(k->id, h);

    k = gs_auth_key_at(a, 3); /* last line without a newline */
    GS_ASSERT_EQ(k->line, 6);
    GS_ASSERT_EQ(k->limits.set, GS_AUTH_LIM_RATE | GS_AUTH_LIM_TPM);
    GS_ASSERT_EQ(k->limits.rate_mrps, 0);
    GS_ASSERT(gs_auth_key_at(a, 4) == NULL);
    gs_auth_free(a);
}

static void test_rates(void)
{
    static const struct {
        const char *opt;
        uint32_t mrps;
    } cases[] = {{"rate=2/s", 2000},    {"rate=0.5/s", 500}, {"rate=0.001/s", 1},
                 {"rate=1.25/s", 1250}, {"rate=60/m", 1000}, {"rate=1/m", 16},
                 {"rate=0", 0}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char line[200];
        snprintf(line, sizeof line, "sha256:%s %s\n", H_ABC, cases[i].opt);
        gs_auth *a = NULL;
        gs_diag d;
        GS_ASSERT_MSG(parse(line, &a, &d) == 0, "%s: %s", cases[i].opt, d.msg);
        GS_ASSERT_EQ(gs_auth_key_at(a, 0)->limits.rate_mrps, cases[i].mrps);
        gs_auth_free(a);
    }
}

/* Every error names the origin and the line. */
static void test_parse_errors(void)
{
    static const struct {
        const char *text;
        int code;
        const char *msg;
    } cases[] = {
        {"# ok\nsha256:abc\n", GS_EFORMAT, "keys.txt:2: sha256: expects 64 hex digits, got 3"},
        {"\n\nsha256:" H_ABC "x\n", GS_EFORMAT,
         "keys.txt:3: sha256: expects 64 hex digits, got 65"},
        {"sha256:zz7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad\n", GS_EFORMAT,
         "keys.txt:1: sha256: has a character that is not hex"},
        {"k1\nk2 colour=red\n", GS_EFORMAT,
         "keys.txt:2: unknown option \"colour\" (name, rate, burst, rpm, tpm, streams)"},
        {"k1 rpm=10 rpm=20\n", GS_EFORMAT, "keys.txt:1: rpm is given twice"},
        {"k1 rpm=-1\n", GS_EFORMAT, "keys.txt:1: rpm expects a whole number"},
        {"k1 streams=99999999\n", GS_EFORMAT, "keys.txt:1: streams is out of range"},
        {"k1 rate=5\n", GS_EFORMAT,
         "keys.txt:1: rate expects <requests>/s or <requests>/m, e.g. 2/s or 0.5/s"},
        {"k1 rate=0.0001/s\n", GS_EFORMAT,
         "keys.txt:1: rate expects at most 3 digits after the decimal point"},
        {"k1 rate=0.000/s\n", GS_EFORMAT,
         "keys.txt:1: rate is below the smallest rate (write 0 for unlimited)"},
        {"k1 name=a/b\n", GS_EFORMAT,
         "keys.txt:1: name must be 1..64 characters of A-Z a-z 0-9 . _ -"},
        {"k1 name=x name=y\n", GS_EFORMAT, "keys.txt:1: name is given twice"},
        {"k1 name=x\nk2 name=x\n", GS_EFORMAT, "keys.txt:2: name \"x\" is already used on line 1"},
        {"abc\n# again\nsha256:" H_ABC "\n", GS_EFORMAT, "keys.txt:3: the same key as line 1"},
        {"name=x\n", GS_EFORMAT, "keys.txt:1: the line starts with an option; the key comes first"},
        {"k1 rpm\n", GS_EFORMAT, "keys.txt:1: expected name=value, got \"rpm\""},
        {"# only comments\n\n   \n", GS_ECONFIG,
         "keys.txt: no key in the file (nobody could connect)"},
        {"", GS_ECONFIG, "keys.txt: no key in the file (nobody could connect)"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        gs_auth *a = (gs_auth *)&cases; /* must be reset to NULL */
        gs_diag d;
        int rc = parse(cases[i].text, &a, &d);
        GS_ASSERT_MSG(rc == cases[i].code, "case %zu: rc %d (%s)", i, rc, d.msg);
        GS_ASSERT(a == NULL);
        GS_ASSERT_STREQ(d.msg, cases[i].msg);
    }
    /* a NUL byte and an over-long line */
    gs_auth *a = NULL;
    gs_diag d;
    GS_ASSERT_EQ(gs_auth_parse("k1\nk\0\n", 6, "keys.txt", &a, &d), GS_EFORMAT);
    GS_ASSERT_STREQ(d.msg, "keys.txt:2: NUL byte in the line");
    size_t n = 5000;
    char *big = malloc(n + 8);
    GS_ASSERT(big);
    memcpy(big, "k1\n", 3);
    memset(big + 3, 'x', n);
    GS_ASSERT_EQ(gs_auth_parse(big, n + 3, "keys.txt", &a, &d), GS_EFORMAT);
    free(big);
    GS_ASSERT_STREQ(d.msg, "keys.txt:2: line longer than 4096 bytes");
}

static void test_load_file(void)
{
    const char *dir = getenv("TMPDIR");
    char path[512];
    snprintf(path, sizeof path, "%s/gs_test_auth_XXXXXX", dir && *dir ? dir : P_tmpdir);
    int fd = mkstemp(path);
    GS_ASSERT(fd >= 0);
    const char text[] = "# test\nsha256:" H_ABC " name=a\nbad-line rate=fast\n";
    GS_ASSERT_EQ(write(fd, text, sizeof text - 1), (long long)(sizeof text - 1));
    close(fd);
    gs_auth *a = NULL;
    gs_diag d;
    int rc = gs_auth_load(path, &a, &d);
    char want[600];
    snprintf(want, sizeof want,
             "%s:3: rate expects <requests>/s or <requests>/m, e.g. 2/s or 0.5/s", path);
    GS_ASSERT_EQ(rc, GS_EFORMAT);
    GS_ASSERT_STREQ(d.msg, want);
    /* fix line 3 and load again */
    fd = open(path, O_WRONLY | O_TRUNC);
    GS_ASSERT(fd >= 0);
    const char text2[] = "# test\nsha256:" H_ABC " name=a\ngood-line rate=1/s\n";
    GS_ASSERT_EQ(write(fd, text2, sizeof text2 - 1), (long long)(sizeof text2 - 1));
    close(fd);
    GS_ASSERT_OK(gs_auth_load(path, &a, &d));
    gs_auth_info info;
    gs_auth_get_info(a, &info);
    GS_ASSERT_EQ(info.n_keys, 2);
    GS_ASSERT_EQ(info.first_plaintext_line, 3);
    gs_auth_free(a);
    unlink(path);
    GS_ASSERT_EQ(gs_auth_load(path, &a, &d), GS_ENOENT);
    GS_ASSERT(a == NULL);
}

/* Every check hashes once and compares against EVERY entry, whether one
 * matches (first, last) or none does. */
static void test_check(void)
{
    char text[2048] = "";
    char h[65];
    const char *keys[] = {"abc", "key-two", "key-three", "key-four", "key-five"};
    for (int i = 0; i < 5; i++) {
        GS_ASSERT_OK(gs_auth_hash_hex(keys[i], strlen(keys[i]), h));
        char line[128];
        snprintf(line, sizeof line, "sha256:%s name=k%d\n", h, i);
        strcat(text, line);
    }
    gs_auth *a = NULL;
    gs_diag d;
    GS_ASSERT_OK(parse(text, &a, &d));
    const gs_auth_key *k = NULL;
    gs_auth_stats st;
    for (int i = 0; i < 5; i++) {
        GS_ASSERT_OK(gs_auth_check(a, keys[i], strlen(keys[i]), &k));
        GS_ASSERT(k == gs_auth_key_at(a, (size_t)i));
        gs_auth_get_stats(a, &st);
        GS_ASSERT_EQ(st.compares, 5 * (i + 1));
    }
    GS_ASSERT_EQ(gs_auth_check(a, "abd", 3, &k), GS_EAUTH);
    GS_ASSERT(k == NULL);
    GS_ASSERT_EQ(gs_auth_check(a, "ab", 2, &k), GS_EAUTH);   /* a prefix */
    GS_ASSERT_EQ(gs_auth_check(a, "abcd", 3, NULL), 0);      /* len counts, not NUL */
    GS_ASSERT_EQ(gs_auth_check(a, H_ABC, 64, &k), GS_EAUTH); /* the hash is not the key */
    gs_auth_get_stats(a, &st);
    GS_ASSERT_EQ(st.checks, 9);
    GS_ASSERT_EQ(st.failures, 3);
    GS_ASSERT_EQ(st.compares, 45);
    /* empty and over-long tokens are refused before hashing */
    GS_ASSERT_EQ(gs_auth_check(a, "", 0, &k), GS_EAUTH);
    char *big = calloc(1, 5000);
    GS_ASSERT(big);
    memset(big, 'a', 4097);
    GS_ASSERT_EQ(gs_auth_check(a, big, 4097, &k), GS_EAUTH);
    free(big);
    gs_auth_get_stats(a, &st);
    GS_ASSERT_EQ(st.checks, 9);
    gs_auth_free(a);
    gs_auth_free(NULL);
}

static void test_bearer(void)
{
    static const struct {
        const char *in;
        int rc;
        const char *tok;
    } cases[] = {
        {"Bearer abc", 0, "abc"},
        {"bearer abc", 0, "abc"},
        {"BEARER abc", 0, "abc"},
        {"BeArEr\tabc", 0, "abc"},
        {"  Bearer    sk-1.2_3~+/==  ", 0, "sk-1.2_3~+/=="},
        {"\tBearer abc\t", 0, "abc"},
        {"Bearer", GS_EAUTH, NULL},
        {"Bearer ", GS_EAUTH, NULL},
        {"Bearer    ", GS_EAUTH, NULL},
        {"Bearerabc", GS_EAUTH, NULL},
        {"Basic YWxhZGRpbjpvcGVuc2VzYW1l", GS_EAUTH, NULL},
        {"Bearer a b", GS_EAUTH, NULL},
        {"Bearer a\x01", GS_EAUTH, NULL},
        {"Bearer \xc3\xa9t\xc3\xa9", GS_EAUTH, NULL},
        {"", GS_EAUTH, NULL},
        {"   ", GS_EAUTH, NULL},
        {"abc", GS_EAUTH, NULL},
        {"Bear abc", GS_EAUTH, NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *tok = "x";
        size_t n = 99;
        int rc = gs_auth_parse_bearer(cases[i].in, strlen(cases[i].in), &tok, &n);
        GS_ASSERT_MSG(rc == cases[i].rc, "case %zu \"%s\": rc %d", i, cases[i].in, rc);
        if (cases[i].tok) {
            GS_ASSERT_EQ(n, strlen(cases[i].tok));
            GS_ASSERT(memcmp(tok, cases[i].tok, n) == 0);
        } else {
            GS_ASSERT(tok == NULL);
            GS_ASSERT_EQ(n, 0);
        }
    }
    /* len bounds the value: the NUL and what follows are not read */
    const char *tok;
    size_t n;
    GS_ASSERT_OK(gs_auth_parse_bearer("Bearer abc def", 10, &tok, &n));
    GS_ASSERT_EQ(n, 3);
    GS_ASSERT_EQ(gs_auth_parse_bearer("Bearer a\0b", 10, &tok, &n), GS_EAUTH);
    GS_ASSERT_EQ(gs_auth_parse_bearer(NULL, 0, &tok, &n), GS_EAUTH);
}

/* Header value -> token -> key, end to end. */
static void test_header_to_key(void)
{
    gs_auth *a = NULL;
    gs_diag d;
    GS_ASSERT_OK(parse("sha256:" H_ABC " name=alice\n", &a, &d));
    const char *hv = "  bearer abc ";
    const char *tok;
    size_t n;
    GS_ASSERT_OK(gs_auth_parse_bearer(hv, strlen(hv), &tok, &n));
    const gs_auth_key *k;
    GS_ASSERT_OK(gs_auth_check(a, tok, n, &k));
    GS_ASSERT_STREQ(k->name, "alice");
    gs_auth_free(a);
}

int main(void)
{
    GS_RUN(test_hash_hex);
    GS_RUN(test_parse_good);
    GS_RUN(test_rates);
    GS_RUN(test_parse_errors);
    GS_RUN(test_load_file);
    GS_RUN(test_check);
    GS_RUN(test_bearer);
    GS_RUN(test_header_to_key);
    return gs_test_summary();
}
