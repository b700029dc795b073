/* model_config.c - config.json / generation_config.json into typed structs,
 * and the check of a checkpoint's tensor set against the config.
 *
 * Owns nothing beyond a call: parses into caller structs. Plain keys go
 * through one table (section, key, type, bounds, offset) read by one
 * function whose errors name the key; the rope block, token-id lists and
 * the cross-key consistency rules are code below the table.
 * Thread-safe: no globals. */
#include "worker/model/model_config.h"

#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/file.h"
#include "kernels/kernels.h" /* GS_Q4_GROUP */

#define CFG_MAX_FILE (16u * 1024u * 1024u)

typedef enum { K_INT, K_DOUBLE, K_BOOL } key_kind;

typedef struct {
    const char *section; /* NULL: top level */
    const char *key;
    key_kind kind;
    size_t off; /* into gs_model_config */
    int required;
    double lo, hi; /* inclusive bounds (numbers) */
    double dflt;   /* value when optional and absent or null */
} cfg_key;

#define OFF(f) offsetof(gs_model_config, f)
#define BIG 1073741824.0 /* 2^30: above any real size, below INT32_MAX */
#define TXT "text_config"
#define VIS "vision_config"

static const cfg_key model_keys[] = {
    {TXT, "vocab_size", K_INT, OFF(text.vocab_size), 1, 1, BIG, 0},
    {TXT, "hidden_size", K_INT, OFF(text.hidden_size), 1, 1, BIG, 0},
    {TXT, "intermediate_size", K_INT, OFF(text.intermediate_size), 1, 1, BIG, 0},
    {TXT, "num_hidden_layers", K_INT, OFF(text.num_hidden_layers), 1, 1, 100000, 0},
    {TXT, "num_attention_heads", K_INT, OFF(text.num_attention_heads), 1, 1, 100000, 0},
    {TXT, "head_dim", K_INT, OFF(text.head_dim), 0, 1, 100000, 0},
    {TXT, "max_position_embeddings", K_INT, OFF(text.max_position_embeddings), 1, 1, BIG, 0},
    {TXT, "rms_norm_eps", K_DOUBLE, OFF(text.rms_norm_eps), 1, 0, 1, 0},
    {TXT, "attention_bias", K_BOOL, OFF(text.attention_bias), 0, 0, 1, 1},
    {VIS, "depth", K_INT, OFF(vision.depth), 1, 1, 100000, 0},
    {VIS, "hidden_size", K_INT, OFF(vision.hidden_size), 1, 1, BIG, 0},
    {VIS, "num_heads", K_INT, OFF(vision.num_heads), 1, 1, 100000, 0},
    {VIS, "intermediate_size", K_INT, OFF(vision.intermediate_size), 1, 1, BIG, 0},
    {VIS, "out_hidden_size", K_INT, OFF(vision.out_hidden_size), 1, 1, BIG, 0},
    {VIS, "patch_size", K_INT, OFF(vision.patch_size), 1, 1, 4096, 0},
    {VIS, "temporal_patch_size", K_INT, OFF(vision.temporal_patch_size), 1, 1, 64, 0},
    {VIS, "spatial_merge_size", K_INT, OFF(vision.spatial_merge_size), 1, 1, 64, 0},
    {VIS, "image_size", K_INT, OFF(vision.image_size), 1, 1, 1000000, 0},
    {VIS, "in_channels", K_INT, OFF(vision.in_channels), 1, 1, 64, 0},
    {VIS, "rms_norm_eps", K_DOUBLE, OFF(vision.rms_norm_eps), 1, 0, 1, 0},
    {VIS, "attention_bias", K_BOOL, OFF(vision.attention_bias), 0, 0, 1, 0},
    {NULL, "image_token_id", K_INT, OFF(image_token_id), 1, 0, BIG, 0},
    {NULL, "video_token_id", K_INT, OFF(video_token_id), 0, 0, BIG, -1},
    {NULL, "image_start_token_id", K_INT, OFF(image_start_token_id), 0, 0, BIG, -1},
    {NULL, "image_end_token_id", K_INT, OFF(image_end_token_id), 0, 0, BIG, -1},
    {NULL, "video_start_token_id", K_INT, OFF(video_start_token_id), 0, 0, BIG, -1},
    {NULL, "video_end_token_id", K_INT, OFF(video_end_token_id), 0, 0, BIG, -1},
    {NULL, "tie_word_embeddings", K_BOOL, OFF(tie_word_embeddings), 0, 0, 1, 0},
};

/* "section.key" for messages. */
static const char *qual(char *buf, size_t cap, const char *section, const char *key)
{
    if (section)
        snprintf(buf, cap, "%s.%s", section, key);
    else
        snprintf(buf, cap, "%s", key);
    return buf;
}

/* One value by kind into *dst (int32_t, double or int). JSON null counts as
 * absent. Returns 1 when set, 0 when absent, or a negative error. */
static int read_value(const char *what, const char *name, const json_t *v, key_kind kind, double lo,
                      double hi, void *dst, gs_diag *diag)
{
    if (!v || json_is_null(v))
        return 0;
    switch (kind) {
    case K_INT: {
        if (!json_is_integer(v))
            return gs_diag_set(diag, GS_ECONFIG, "%s: %s: must be an integer", what, name);
        json_int_t x = json_integer_value(v);
        if ((double)x < lo || (double)x > hi)
            return gs_diag_set(diag, GS_ECONFIG, "%s: %s: %lld out of range [%.0f, %.0f]", what,
                               name, (long long)x, lo, hi);
        *(int32_t *)dst = (int32_t)x;
        return 1;
    }
    case K_DOUBLE: {
        if (!json_is_number(v))
            return gs_diag_set(diag, GS_ECONFIG, "%s: %s: must be a number", what, name);
        double x = json_number_value(v);
        if (!(x >= lo && x <= hi))
            return gs_diag_set(diag, GS_ECONFIG, "%s: %s: %g out of range [%g, %g]", what, name, x,
                               lo, hi);
        *(double *)dst = x;
        return 1;
    }
    case K_BOOL:
        if (!json_is_boolean(v))
            return gs_diag_set(diag, GS_ECONFIG, "%s: %s: must be true or false", what, name);
        *(int *)dst = json_is_true(v);
        return 1;
    }
    return gs_diag_set(diag, GS_EINTERNAL, "%s: %s: bad key kind", what, name);
}

static int read_table(const char *what, const json_t *root, gs_model_config *cfg, gs_diag *diag)
{
    char name[128];
    for (size_t i = 0; i < sizeof model_keys / sizeof model_keys[0]; i++) {
        const cfg_key *k = &model_keys[i];
        const json_t *obj = k->section ? json_object_get(root, k->section) : root;
        void *dst = (char *)cfg + k->off;
        qual(name, sizeof name, k->section, k->key);
        int rc =
            read_value(what, name, json_object_get(obj, k->key), k->kind, k->lo, k->hi, dst, diag);
        if (rc < 0)
            return rc;
        if (rc == 0) {
            if (k->required)
                return gs_diag_set(diag, GS_ECONFIG, "%s: %s: missing", what, name);
            if (k->kind == K_INT)
                *(int32_t *)dst = (int32_t)k->dflt;
            else if (k->kind == K_DOUBLE)
                *(double *)dst = k->dflt;
            else
                *(int *)dst = (int)k->dflt;
        }
    }
    return 0;
}

/* An int or a list of ints into ids[0..*n). Returns 1 when set, 0 absent. */
static int read_id_list(const char *what, const char *name, const json_t *v, int32_t vocab,
                        int32_t *ids, int32_t *n, gs_diag *diag)
{
    if (!v || json_is_null(v))
        return 0;
    size_t cnt = json_is_array(v) ? json_array_size(v) : 1;
    if (!json_is_array(v) && !json_is_integer(v))
        return gs_diag_set(diag, GS_ECONFIG, "%s: %s: must be an integer or a list of integers",
                           what, name);
    if (cnt > GS_CFG_MAX_EOS)
        return gs_diag_set(diag, GS_ECONFIG, "%s: %s: %zu ids, at most %d supported", what, name,
                           cnt, GS_CFG_MAX_EOS);
    for (size_t i = 0; i < cnt; i++) {
        const json_t *e = json_is_array(v) ? json_array_get(v, i) : v;
        if (!json_is_integer(e))
            return gs_diag_set(diag, GS_ECONFIG, "%s: %s[%zu]: must be an integer", what, name, i);
        json_int_t x = json_integer_value(e);
        if (x < 0 || (vocab > 0 && x >= vocab) || x > INT32_MAX)
            return gs_diag_set(diag, GS_ECONFIG, "%s: %s: id %lld outside the vocabulary (%d)",
                               what, name, (long long)x, vocab);
        ids[i] = (int32_t)x;
    }
    *n = (int32_t)cnt;
    return 1;
}

static int check_id(const char *what, const char *name, int32_t id, int32_t vocab, gs_diag *diag)
{
    if (id >= vocab)
        return gs_diag_set(diag, GS_ECONFIG, "%s: %s: id %d outside the vocabulary (%d)", what,
                           name, id, vocab);
    return 0;
}

/* The rope dict: rope_scaling (4.57) wins over rope_parameters (5.x), as in
 * transformers' convert_rope_params_to_dict. Sets *dict_name for messages. */
static int rope_dict(const char *what, const char *section, const json_t *sec, const json_t **out,
                     const char **dict_name, gs_diag *diag)
{
    static const char *names[] = {"rope_scaling", "rope_parameters"};
    *out = NULL;
    *dict_name = names[1];
    for (int i = 0; i < 2; i++) {
        const json_t *v = json_object_get(sec, names[i]);
        if (!v || json_is_null(v))
            continue;
        if (!json_is_object(v))
            return gs_diag_set(diag, GS_ECONFIG, "%s: %s.%s: must be an object", what, section,
                               names[i]);
        if (json_object_size(v) == 0)
            continue;
        *out = v;
        *dict_name = names[i];
        return 0;
    }
    return 0;
}

/* rope_type (or "type") of d must be one of ok[0..n). */
static int rope_type_ok(const char *what, const char *sect, const char *dname, const json_t *d,
                        const char *const *ok, int n, gs_diag *diag)
{
    const json_t *t = json_object_get(d, "rope_type");
    if (!t || json_is_null(t))
        t = json_object_get(d, "type");
    if (!t || json_is_null(t))
        return 0;
    if (!json_is_string(t))
        return gs_diag_set(diag, GS_ECONFIG, "%s: %s.%s.rope_type: must be a string", what, sect,
                           dname);
    for (int i = 0; i < n; i++)
        if (strcmp(json_string_value(t), ok[i]) == 0)
            return 0;
    return gs_diag_set(diag, GS_ECONFIG, "%s: %s.%s.rope_type: '%s' not supported", what, sect,
                       dname, json_string_value(t));
}

/* A double from dict d (named dname) or else from the section itself;
 * dflt when in neither. */
static int rope_number(const char *what, const char *sect, const json_t *sec, const json_t *d,
                       const char *dname, const char *key, double lo, double hi, double dflt,
                       double *out, gs_diag *diag)
{
    char name[128];
    snprintf(name, sizeof name, "%s.%s.%s", sect, dname, key);
    int rc = d ? read_value(what, name, json_object_get(d, key), K_DOUBLE, lo, hi, out, diag) : 0;
    if (rc != 0)
        return rc < 0 ? rc : 0;
    snprintf(name, sizeof name, "%s.%s", sect, key);
    rc = read_value(what, name, json_object_get(sec, key), K_DOUBLE, lo, hi, out, diag);
    if (rc < 0)
        return rc;
    if (rc == 0)
        *out = dflt;
    return 0;
}

static int parse_text_rope(const char *what, const json_t *tc, gs_text_config *t, gs_diag *diag)
{
    const json_t *d;
    const char *dn;
    int rc = rope_dict(what, TXT, tc, &d, &dn, diag);
    if (rc != 0)
        return rc;
    static const char *const ok[] = {"default"};
    if (d && (rc = rope_type_ok(what, TXT, dn, d, ok, 1, diag)) != 0)
        return rc;
    if ((rc = rope_number(what, TXT, tc, d, dn, "rope_theta", 1e-9, 1e300, 10000.0, &t->rope_theta,
                          diag)) != 0)
        return rc;
    if ((rc = rope_number(what, TXT, tc, d, dn, "partial_rotary_factor", 1e-9, 1.0, 1.0,
                          &t->partial_rotary_factor, diag)) != 0)
        return rc;
    const json_t *ms = d ? json_object_get(d, "mrope_section") : NULL;
    if (!ms || json_is_null(ms)) {
        t->mrope_section[0] = 8; /* transformers' Glm4vTextRotaryEmbedding default */
        t->mrope_section[1] = 12;
        t->mrope_section[2] = 12;
        return 0;
    }
    if (!json_is_array(ms) || json_array_size(ms) != 3)
        return gs_diag_set(diag, GS_ECONFIG,
                           "%s: %s.%s.mrope_section: must be a list of 3 integers", what, TXT, dn);
    for (int i = 0; i < 3; i++) {
        const json_t *e = json_array_get(ms, (size_t)i);
        if (!json_is_integer(e) || json_integer_value(e) < 0 || json_integer_value(e) > 100000)
            return gs_diag_set(diag, GS_ECONFIG,
                               "%s: %s.%s.mrope_section[%d]: must be an integer in [0, 100000]",
                               what, TXT, dn, i);
        t->mrope_section[i] = (int32_t)json_integer_value(e);
    }
    return 0;
}

static int parse_arch(const char *what, const json_t *root, gs_diag *diag)
{
    static const char *const archs[] = {"Glm4vForConditionalGeneration",
                                        "Glm46VForConditionalGeneration"};
    static const char *const types[] = {"glm4v", "glm46v"};
    const json_t *a = json_object_get(root, "architectures");
    const json_t *mt = json_object_get(root, "model_type");
    const char *first = NULL;
    if (json_is_array(a)) {
        for (size_t i = 0; i < json_array_size(a); i++) {
            const char *s = json_string_value(json_array_get(a, i));
            if (!s)
                continue;
            if (!first)
                first = s;
            for (int j = 0; j < 2; j++)
                if (strcmp(s, archs[j]) == 0)
                    return 0;
        }
    }
    if (json_is_string(mt)) {
        for (int j = 0; j < 2; j++)
            if (strcmp(json_string_value(mt), types[j]) == 0)
                return 0;
        if (!first)
            first = json_string_value(mt);
    }
    return gs_diag_set(diag, GS_ECONFIG, "%s: unsupported architecture %s", what,
                       first ? first : "(no architectures or model_type)");
}

static int validate(const char *what, gs_model_config *c, gs_diag *diag)
{
    gs_text_config *t = &c->text;
    gs_vision_config *v = &c->vision;
    if (t->hidden_size % t->num_attention_heads != 0)
        return gs_diag_set(diag, GS_ECONFIG,
                           "%s: text_config.num_attention_heads: %d must divide hidden_size (%d)",
                           what, t->num_attention_heads, t->hidden_size);
    if (t->num_attention_heads % t->num_key_value_heads != 0)
        return gs_diag_set(diag, GS_ECONFIG,
                           "%s: text_config.num_key_value_heads: %d must divide "
                           "num_attention_heads (%d)",
                           what, t->num_key_value_heads, t->num_attention_heads);
    int32_t hd = t->hidden_size / t->num_attention_heads;
    if (t->head_dim != 0 && t->head_dim != hd)
        return gs_diag_set(diag, GS_ECONFIG,
                           "%s: text_config.head_dim: %d differs from hidden_size / "
                           "num_attention_heads (%d), which the model uses",
                           what, t->head_dim, hd);
    t->head_dim = hd;
    t->rotary_dim = (int32_t)((double)hd * t->partial_rotary_factor); /* Python int() */
    if (t->rotary_dim < 2 || t->rotary_dim % 2 != 0)
        return gs_diag_set(diag, GS_ECONFIG,
                           "%s: text_config partial_rotary_factor: rotary dims %d (head_dim %d x "
                           "%g) must be even and >= 2",
                           what, t->rotary_dim, hd, t->partial_rotary_factor);
    int32_t ms = t->mrope_section[0] + t->mrope_section[1] + t->mrope_section[2];
    if (ms * 2 != t->rotary_dim)
        return gs_diag_set(diag, GS_ECONFIG,
                           "%s: text_config mrope_section: [%d, %d, %d] sums to %d, must be "
                           "rotary_dim / 2 = %d (head_dim %d x partial_rotary_factor %g)",
                           what, t->mrope_section[0], t->mrope_section[1], t->mrope_section[2], ms,
                           t->rotary_dim / 2, hd, t->partial_rotary_factor);
    if (v->hidden_size % v->num_heads != 0)
        return gs_diag_set(diag, GS_ECONFIG,
                           "%s: vision_config.num_heads: %d must divide hidden_size (%d)", what,
                           v->num_heads, v->hidden_size);
    v->head_dim = v->hidden_size / v->num_heads;
    if (v->head_dim % 4 != 0)
        return gs_diag_set(diag, GS_ECONFIG,
                           "%s: vision_config: head_dim %d must be a multiple of 4 (2-D rope)",
                           what, v->head_dim);
    if (v->out_hidden_size != t->hidden_size)
        return gs_diag_set(diag, GS_ECONFIG,
                           "%s: vision_config.out_hidden_size: %d must equal "
                           "text_config.hidden_size (%d)",
                           what, v->out_hidden_size, t->hidden_size);
    if (v->image_size < v->patch_size)
        return gs_diag_set(diag, GS_ECONFIG,
                           "%s: vision_config.image_size: %d smaller than patch_size (%d)", what,
                           v->image_size, v->patch_size);
    int64_t side = v->image_size / v->patch_size;
    if (side * side > INT32_MAX)
        return gs_diag_set(diag, GS_ECONFIG, "%s: vision_config.image_size: %d too large", what,
                           v->image_size);
    v->num_positions = (int32_t)(side * side);

    static const struct {
        const char *key;
        size_t off;
    } ids[] = {
        {"image_token_id", OFF(image_token_id)},
        {"video_token_id", OFF(video_token_id)},
        {"image_start_token_id", OFF(image_start_token_id)},
        {"image_end_token_id", OFF(image_end_token_id)},
        {"video_start_token_id", OFF(video_start_token_id)},
        {"video_end_token_id", OFF(video_end_token_id)},
    };
    for (size_t i = 0; i < sizeof ids / sizeof ids[0]; i++) {
        int rc = check_id(what, ids[i].key, *(const int32_t *)((const char *)c + ids[i].off),
                          t->vocab_size, diag);
        if (rc != 0)
            return rc;
    }
    return 0;
}

/* "quantization_config": absent or null for a plain checkpoint; else the
 * section glmserve-quantize writes (model_config.h). */
static int parse_quant(const char *what, const json_t *root, gs_model_config *c, gs_diag *diag)
{
    const json_t *q = json_object_get(root, "quantization_config");
    if (!q || json_is_null(q))
        return 0;
    if (!json_is_object(q))
        return gs_diag_set(diag, GS_ECONFIG, "%s: quantization_config: must be an object", what);
    const char *m = json_string_value(json_object_get(q, "quant_method"));
    if (!m || strcmp(m, "glmserve"))
        return gs_diag_set(diag, GS_ECONFIG,
                           "%s: quantization_config.quant_method: '%s' is not supported (glmserve "
                           "reads its own format, written by glmserve-quantize)",
                           what, m ? m : "(missing)");
    const char *w = json_string_value(json_object_get(q, "weights"));
    c->quant_bits = w && !strcmp(w, "int8") ? 8 : w && !strcmp(w, "int4") ? 4 : 0;
    if (!c->quant_bits)
        return gs_diag_set(diag, GS_ECONFIG,
                           "%s: quantization_config.weights: must be \"int8\" or \"int4\", got %s",
                           what, w ? w : "(missing)");
    const json_t *g = json_object_get(q, "group_size");
    if (g && !json_is_null(g) && (!json_is_integer(g) || json_integer_value(g) != GS_Q4_GROUP))
        return gs_diag_set(diag, GS_ECONFIG,
                           "%s: quantization_config.group_size: must be %d (the int4 group of "
                           "this build)",
                           what, GS_Q4_GROUP);
    c->quant_group = GS_Q4_GROUP;
    return 0;
}

int gs_model_config_parse(const char *json, size_t len, const char *what, gs_model_config *out,
                          gs_diag *diag)
{
    if (!what)
        what = "config.json";
    gs_diag_clear(diag);
    memset(out, 0, sizeof *out);
    json_error_t jerr;
    json_t *root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return gs_diag_set(diag, GS_ECONFIG, "%s: JSON: %s (line %d)", what, jerr.text, jerr.line);
    int rc = 0;
    if (!json_is_object(root)) {
        rc = gs_diag_set(diag, GS_ECONFIG, "%s: not a JSON object", what);
        goto out;
    }
    if ((rc = parse_arch(what, root, diag)) != 0)
        goto out;
    const json_t *tc = json_object_get(root, TXT), *vc = json_object_get(root, VIS);
    if (!json_is_object(tc)) {
        rc = gs_diag_set(diag, GS_ECONFIG, "%s: text_config: %s", what,
                         tc ? "must be an object" : "missing");
        goto out;
    }
    if (!json_is_object(vc)) {
        rc = gs_diag_set(diag, GS_ECONFIG, "%s: vision_config: %s", what,
                         vc ? "must be an object" : "missing");
        goto out;
    }
    if ((rc = read_table(what, root, out, diag)) != 0)
        goto out;
    gs_text_config *t = &out->text;

    /* num_key_value_heads: null means "= num_attention_heads" (transformers). */
    const json_t *kv = json_object_get(tc, "num_key_value_heads");
    if (json_is_null(kv)) {
        t->num_key_value_heads = t->num_attention_heads;
    } else {
        rc = read_value(what, "text_config.num_key_value_heads", kv, K_INT, 1, 100000,
                        &t->num_key_value_heads, diag);
        if (rc == 0)
            rc =
                gs_diag_set(diag, GS_ECONFIG, "%s: text_config.num_key_value_heads: missing", what);
        if (rc < 0)
            goto out;
        rc = 0;
    }
    if ((rc = parse_text_rope(what, tc, t, diag)) != 0)
        goto out;
    const json_t *d;
    const char *dn;
    static const char *const vok[] = {"default", "axial"};
    if ((rc = rope_dict(what, VIS, vc, &d, &dn, diag)) != 0 ||
        (d && (rc = rope_type_ok(what, VIS, dn, d, vok, 2, diag)) != 0) ||
        (rc = rope_number(what, VIS, vc, d, dn, "rope_theta", 1e-9, 1e300, 10000.0,
                          &out->vision.rope_theta, diag)) != 0)
        goto out;

    /* eos / pad: text_config first, then the top level. */
    rc = read_id_list(what, "text_config.eos_token_id", json_object_get(tc, "eos_token_id"),
                      t->vocab_size, t->eos_token_ids, &t->n_eos, diag);
    if (rc == 0)
        rc = read_id_list(what, "eos_token_id", json_object_get(root, "eos_token_id"),
                          t->vocab_size, t->eos_token_ids, &t->n_eos, diag);
    if (rc < 0)
        goto out;
    int32_t pad[GS_CFG_MAX_EOS], npad = 0;
    rc = read_id_list(what, "text_config.pad_token_id", json_object_get(tc, "pad_token_id"),
                      t->vocab_size, pad, &npad, diag);
    if (rc == 0)
        rc = read_id_list(what, "pad_token_id", json_object_get(root, "pad_token_id"),
                          t->vocab_size, pad, &npad, diag);
    if (rc < 0)
        goto out;
    if (rc > 0 && npad != 1) {
        rc = gs_diag_set(diag, GS_ECONFIG, "%s: pad_token_id: must be one integer", what);
        goto out;
    }
    t->pad_token_id = rc > 0 ? pad[0] : -1;
    if (json_is_true(json_object_get(tc, "tie_word_embeddings")))
        out->tie_word_embeddings = 1; /* Glm4vConfig.__post_init__ */
    if ((rc = parse_quant(what, root, out, diag)) != 0)
        goto out;
    rc = validate(what, out, diag);
out:
    json_decref(root);
    return rc;
}

/* Reads dir/name whole (NUL-terminated, owned by the caller). */
static int read_folder_file(const char *dir, const char *name, char **out, size_t *len,
                            gs_diag *diag)
{
    char path[4096];
    if ((size_t)snprintf(path, sizeof path, "%s/%s", dir, name) >= sizeof path)
        return gs_diag_set(diag, GS_EINVAL, "%s: path too long", name);
    return gs_read_file(path, CFG_MAX_FILE, out, len, diag);
}

int gs_model_config_load(const char *model_dir, gs_model_config *out, gs_diag *diag)
{
    char *text = NULL;
    size_t len = 0;
    memset(out, 0, sizeof *out);
    int rc = read_folder_file(model_dir, "config.json", &text, &len, diag);
    if (rc != 0)
        return rc;
    rc = gs_model_config_parse(text, len, "config.json", out, diag);
    free(text);
    return rc;
}

int gs_generation_config_parse(const char *json, size_t len, const gs_model_config *cfg,
                               gs_generation_config *out, gs_diag *diag)
{
    static const char *what = "generation_config.json";
    gs_diag_clear(diag);
    memset(out, 0, sizeof *out);
    out->pad_token_id = -1;
    json_error_t jerr;
    json_t *root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return gs_diag_set(diag, GS_ECONFIG, "%s: JSON: %s (line %d)", what, jerr.text, jerr.line);
    int rc = 0;
    if (!json_is_object(root)) {
        rc = gs_diag_set(diag, GS_ECONFIG, "%s: not a JSON object", what);
        goto out;
    }
    out->present = 1;
    int32_t vocab = cfg ? cfg->text.vocab_size : 0, pad[GS_CFG_MAX_EOS], npad = 0;
    if ((rc = read_id_list(what, "eos_token_id", json_object_get(root, "eos_token_id"), vocab,
                           out->eos_token_ids, &out->n_eos, diag)) < 0)
        goto out;
    out->has_eos = rc;
    if ((rc = read_id_list(what, "pad_token_id", json_object_get(root, "pad_token_id"), vocab, pad,
                           &npad, diag)) < 0)
        goto out;
    if (rc > 0 && npad != 1) {
        rc = gs_diag_set(diag, GS_ECONFIG, "%s: pad_token_id: must be one integer", what);
        goto out;
    }
    out->has_pad = rc;
    if (rc > 0)
        out->pad_token_id = pad[0];
    const struct {
        const char *key;
        key_kind kind;
        double lo, hi;
        void *dst;
        int *has;
    } keys[] = {
        {"temperature", K_DOUBLE, 0, 1e6, &out->temperature, &out->has_temperature},
        {"top_p", K_DOUBLE, 0, 1, &out->top_p, &out->has_top_p},
        {"top_k", K_INT, 0, BIG, &out->top_k, &out->has_top_k},
        {"repetition_penalty", K_DOUBLE, 1e-9, 1e6, &out->repetition_penalty,
         &out->has_repetition_penalty},
        {"do_sample", K_BOOL, 0, 1, &out->do_sample, &out->has_do_sample},
        {"max_new_tokens", K_INT, 0, BIG, &out->max_new_tokens, &out->has_max_new_tokens},
    };
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        rc = read_value(what, keys[i].key, json_object_get(root, keys[i].key), keys[i].kind,
                        keys[i].lo, keys[i].hi, keys[i].dst, diag);
        if (rc < 0)
            goto out;
        *keys[i].has = rc;
    }
    rc = 0;
out:
    json_decref(root);
    return rc;
}

int gs_generation_config_load(const char *model_dir, const gs_model_config *cfg,
                              gs_generation_config *out, gs_diag *diag)
{
    char *text = NULL;
    size_t len = 0;
    memset(out, 0, sizeof *out);
    out->pad_token_id = -1;
    int rc = read_folder_file(model_dir, "generation_config.json", &text, &len, diag);
    if (rc == GS_ENOENT) {
        gs_diag_clear(diag);
        return 0;
    }
    if (rc != 0)
        return rc;
    rc = gs_generation_config_parse(text, len, cfg, out, diag);
    free(text);
    return rc;
}

/* ------------------------------------------------------------------------
 * Tensor set */

typedef struct {
    const gs_st *st;
    gs_diag *diag;
    size_t n_found;
    int quant; /* a quantized folder: linear matrices may be I8 / U8 + NAME_scale */
} wcheck;

/* A quantized [rows, cols] matrix `name` (I8 or U8) and its NAME_scale. */
static int chk_quant(wcheck *w, const char *name, const gs_st_tensor *t, int64_t rows, int64_t cols)
{
    int q4 = t->dtype == GS_ST_U8;
    int64_t qs[2] = {rows, q4 ? (cols + 1) / 2 : cols};
    int64_t ss[2] = {rows, (cols + GS_Q4_GROUP - 1) / GS_Q4_GROUP};
    char sname[272];
    snprintf(sname, sizeof sname, "%s_scale", name);
    int rc = gs_st_expect(w->st, name, t->dtype, 2, qs, w->diag);
    if (rc == 0)
        rc = gs_st_expect(w->st, sname, GS_ST_F32, q4 ? 2 : 1, ss, w->diag);
    if (rc == GS_ENOENT)
        return gs_diag_set(w->diag, GS_EFORMAT,
                           "tensor '%s' is quantized (%s) but '%s' (its F32 scales) is missing",
                           name, q4 ? "int4" : "int8", sname);
    if (rc)
        return rc;
    w->n_found += 2;
    return 0;
}

/* Checks the tensor named by fmt: present, shape[0..ndim), float dtype;
 * with linear = 1 in a quantized folder, also a quantized form. */
static int chk(wcheck *w, int linear, int ndim, const int64_t *shape, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static int chk(wcheck *w, int linear, int ndim, const int64_t *shape, const char *fmt, ...)
{
    char name[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    const gs_st_tensor *qt = w->quant && linear && ndim == 2 ? gs_st_get(w->st, name) : NULL;
    if (qt && (qt->dtype == GS_ST_I8 || qt->dtype == GS_ST_U8))
        return chk_quant(w, name, qt, shape[0], shape[1]);
    int rc = gs_st_expect(w->st, name, GS_ST_ANY, ndim, shape, w->diag);
    if (rc != 0)
        return rc;
    gs_st_dtype dt = gs_st_get(w->st, name)->dtype;
    if (dt != GS_ST_BF16 && dt != GS_ST_F16 && dt != GS_ST_F32)
        return gs_diag_set(w->diag, GS_EFORMAT, "tensor '%s': dtype %s, expected BF16, F16 or F32",
                           name, gs_st_dtype_name(dt));
    w->n_found++;
    return 0;
}

#define DIMS(...)                                                                                  \
    (int)(sizeof((int64_t[]){__VA_ARGS__}) / sizeof(int64_t)), (int64_t[])                         \
    {                                                                                              \
        __VA_ARGS__                                                                                \
    }
#define CHK(...)                                                                                   \
    do {                                                                                           \
        int rc_ = chk(&w, 0, __VA_ARGS__);                                                         \
        if (rc_ != 0)                                                                              \
            return rc_;                                                                            \
    } while (0)
/* A linear layer's matrix: may be quantized in a quantized folder. */
#define CHKL(...)                                                                                  \
    do {                                                                                           \
        int rc_ = chk(&w, 1, __VA_ARGS__);                                                         \
        if (rc_ != 0)                                                                              \
            return rc_;                                                                            \
    } while (0)

int gs_model_config_check_weights(const gs_model_config *cfg, const gs_st *st, size_t *n_unexpected,
                                  gs_diag *diag)
{
    wcheck w = {st, diag, 0, cfg->quant_bits != 0};
    gs_diag_clear(diag);
    const gs_text_config *t = &cfg->text;
    const int64_t V = t->vocab_size, H = t->hidden_size, I = t->intermediate_size;
    const int64_t QD = (int64_t)t->num_attention_heads * t->head_dim;
    const int64_t KD = (int64_t)t->num_key_value_heads * t->head_dim;
    const char *lp = "model.language_model.layers";

    CHK(DIMS(V, H), "model.language_model.embed_tokens.weight");
    for (int l = 0; l < t->num_hidden_layers; l++) {
        CHK(DIMS(H), "%s.%d.input_layernorm.weight", lp, l);
        CHKL(DIMS(QD, H), "%s.%d.self_attn.q_proj.weight", lp, l);
        CHK(DIMS(QD), "%s.%d.self_attn.q_proj.bias", lp, l);
        CHKL(DIMS(KD, H), "%s.%d.self_attn.k_proj.weight", lp, l);
        CHK(DIMS(KD), "%s.%d.self_attn.k_proj.bias", lp, l);
        CHKL(DIMS(KD, H), "%s.%d.self_attn.v_proj.weight", lp, l);
        CHK(DIMS(KD), "%s.%d.self_attn.v_proj.bias", lp, l);
        CHKL(DIMS(H, QD), "%s.%d.self_attn.o_proj.weight", lp, l);
        CHK(DIMS(H), "%s.%d.post_self_attn_layernorm.weight", lp, l);
        CHK(DIMS(H), "%s.%d.post_attention_layernorm.weight", lp, l);
        CHKL(DIMS(2 * I, H), "%s.%d.mlp.gate_up_proj.weight", lp, l);
        CHKL(DIMS(H, I), "%s.%d.mlp.down_proj.weight", lp, l);
        CHK(DIMS(H), "%s.%d.post_mlp_layernorm.weight", lp, l);
    }
    CHK(DIMS(H), "model.language_model.norm.weight");
    if (!cfg->tie_word_embeddings || gs_st_get(st, "lm_head.weight"))
        CHKL(DIMS(V, H), "lm_head.weight");

    const gs_vision_config *v = &cfg->vision;
    const int64_t VH = v->hidden_size, O = v->out_hidden_size, VI = v->intermediate_size;
    const int64_t P = v->patch_size, M = v->spatial_merge_size;
    CHK(DIMS(VH, v->in_channels, v->temporal_patch_size, P, P),
        "model.visual.patch_embed.proj.weight");
    CHK(DIMS(VH), "model.visual.patch_embed.proj.bias");
    CHK(DIMS(VH), "model.visual.post_conv_layernorm.weight");
    CHK(DIMS(v->num_positions, VH), "model.visual.embeddings.position_embedding.weight");
    for (int b = 0; b < v->depth; b++) {
        CHK(DIMS(VH), "model.visual.blocks.%d.norm1.weight", b);
        CHK(DIMS(VH), "model.visual.blocks.%d.norm2.weight", b);
        CHKL(DIMS(3 * VH, VH), "model.visual.blocks.%d.attn.qkv.weight", b);
        if (v->attention_bias)
            CHK(DIMS(3 * VH), "model.visual.blocks.%d.attn.qkv.bias", b);
        CHKL(DIMS(VH, VH), "model.visual.blocks.%d.attn.proj.weight", b);
        CHKL(DIMS(O, VH), "model.visual.blocks.%d.mlp.gate_proj.weight", b);
        CHKL(DIMS(O, VH), "model.visual.blocks.%d.mlp.up_proj.weight", b);
        CHKL(DIMS(VH, O), "model.visual.blocks.%d.mlp.down_proj.weight", b);
    }
    CHK(DIMS(VH), "model.visual.post_layernorm.weight");
    CHK(DIMS(O, VH, M, M), "model.visual.downsample.weight");
    CHK(DIMS(O), "model.visual.downsample.bias");
    CHKL(DIMS(O, O), "model.visual.merger.proj.weight");
    CHK(DIMS(O), "model.visual.merger.post_projection_norm.weight");
    CHK(DIMS(O), "model.visual.merger.post_projection_norm.bias");
    CHKL(DIMS(VI, O), "model.visual.merger.gate_proj.weight");
    CHKL(DIMS(VI, O), "model.visual.merger.up_proj.weight");
    CHKL(DIMS(O, VI), "model.visual.merger.down_proj.weight");

    if (n_unexpected)
        *n_unexpected = gs_st_count(st) - w.n_found;
    return 0;
}

int gs_model_check_image_params(const gs_model_config *c, const gs_image_params *p, gs_diag *d)
{
    if (!c || !p)
        return gs_diag_set(d, GS_EINVAL, "gs_model_check_image_params: NULL argument");
    static const struct {
        const char *pre_key, *cfg_key;
        size_t pre_off, cfg_off;
    } pairs[] = {
        {"patch_size", "patch_size", offsetof(gs_image_params, patch_size),
         offsetof(gs_vision_config, patch_size)},
        {"temporal_patch_size", "temporal_patch_size",
         offsetof(gs_image_params, temporal_patch_size),
         offsetof(gs_vision_config, temporal_patch_size)},
        {"merge_size", "spatial_merge_size", offsetof(gs_image_params, merge_size),
         offsetof(gs_vision_config, spatial_merge_size)},
    };
    for (size_t i = 0; i < sizeof pairs / sizeof pairs[0]; i++) {
        int32_t a, b;
        memcpy(&a, (const char *)p + pairs[i].pre_off, sizeof a);
        memcpy(&b, (const char *)&c->vision + pairs[i].cfg_off, sizeof b);
        if (a != b)
            return gs_diag_set(d, GS_ECONFIG,
                               "preprocessor_config.json: %s is %d but config.json: "
                               "vision_config.%s is %d; the two files must agree",
                               pairs[i].pre_key, a, pairs[i].cfg_key, b);
    }
    if (c->vision.in_channels != 3)
        return gs_diag_set(d, GS_ECONFIG,
                           "config.json: vision_config.in_channels is %d but "
                           "preprocessor_config.json describes RGB images (3 channels)",
                           c->vision.in_channels);
    return 0;
}
