// Unit tests of the Jinja interpreter (io/jinja.h): features chat templates use, each expected
// output produced by Python's jinja2 set up as Hugging Face's apply_chat_template (trim_blocks,
// lstrip_blocks, loop controls, json.dumps tojson); errors carry line and column; bounded work.
#include <gtest/gtest.h>

#include "io/chat_template.h"
#include "io/jinja.h"

namespace frugal::jinja {
namespace {

struct Case {
  const char* name;
  const char* source;
  const char* globals_json;
  const char* expected;
};

// Expected outputs: tests/jinja/compare_jinja2.py's environment, rendered by jinja2 3.1.
const Case kCases[] = {
    {"output and concat",
     "{{ 'a' ~ 1 ~ none }}|{{ 1 + 2 * 3 }}|{{ 7 // 2 }}|{{ -7 // 2 }}|{{ 7 % 3 }}|{{ 7 / 2 }}|{{ 2 ** 10 }}",
     "{}",
     "a1None|7|3|-4|1|3.5|1024"},
    {"python str of values",
     "{{ [1, 'a', none, true, 2.5] }}|{{ {'k': 'v'} }}|{{ 1.0 }}|{{ 1e20 }}|{{ 0.0001 }}",
     "{}",
     "[1, 'a', None, True, 2.5]|{'k': 'v'}|1.0|1e+20|0.0001"},
    {"if elif else",
     "{% for x in [1, 2, 3] %}{% if x == 1 %}one{% elif x == 2 %}two{% else %}many{% endif %},{% endfor %}",
     "{}",
     "one,two,many,"},
    {"loop variables",
     "{% for x in 'abc' %}{{ loop.index }}{{ loop.index0 }}{{ loop.first }}{{ loop.last }}{{ loop.length }}{{ loop.revindex }};{% endfor %}",
     "{}",
     "10TrueFalse33;21FalseFalse32;32FalseTrue31;"},
    {"loop filter and else",
     "{% for x in xs if x > 1 %}{{ x }}{{ loop.length }}{% else %}empty{% endfor %}|{% for x in [] %}x{% else %}empty{% endfor %}",
     "{\"xs\": [1, 2, 3]}",
     "2232|empty"},
    {"break continue",
     "{% for x in range(10) %}{% if x == 2 %}{% continue %}{% endif %}{% if x > 4 %}{% break %}{% endif %}{{ x }}{% endfor %}",
     "{}",
     "0134"},
    {"set scoping and namespace",
     "{% set a = 1 %}{% set ns = namespace(n=0) %}{% for i in range(3) %}{% set a = a + i %}{% set ns.n = ns.n + i %}{% endfor %}{{ a }} {{ ns.n }}",
     "{}",
     "1 3"},
    {"set block and tuple unpack",
     "{% set x %}hello {{ name }}{% endset %}{{ x | upper }}{% for k, v in d.items() %} {{ k }}={{ v }}{% endfor %}",
     "{\"name\": \"bob\", \"d\": {\"a\": 1, \"b\": 2}}",
     "HELLO BOB a=1 b=2"},
    {"whitespace control",
     "a  {%- if true -%}  b  {%- endif -%}  c\n{{- ' d ' -}}\n e",
     "{}",
     "abc d e"},
    {"trim_blocks lstrip_blocks",
     "<ul>\n    {% for x in xs %}\n    <li>{{ x }}</li>\n    {% endfor %}\n</ul>\n",
     "{\"xs\": [1, 2]}",
     "<ul>\n    <li>1</li>\n    <li>2</li>\n</ul>"},
    {"filters",
     "{{ '  hi  ' | trim }}|{{ xs | length }}|{{ 'Ab' | upper }}{{ 'Ab' | lower }}|{{ xs | join(', ') }}|{{ 'aXbX' | replace('X', '-') }}|{{ xs | first }}{{ xs | last }}|{{ missing | default('dflt') }}|{{ '' | default('e', true) }}|{{ 3 | string }}",
     "{\"xs\": [1, 2, 3]}",
     "hi|3|ABab|1, 2, 3|a-b-|13|dflt|e|3"},
    {"tojson",
     "{{ d | tojson }}|{{ d | tojson(indent=2) }}|{{ 'é\"\\n' | tojson }}",
     "{\"d\": {\"b\": [1, 2.5, null, true], \"a\": \"x\"}}",
     "{\"b\": [1, 2.5, null, true], \"a\": \"x\"}|{\n  \"b\": [\n    1,\n    2.5,\n    null,\n    true\n  ],\n  \"a\": \"x\"\n}|\"é\\\"\\n\""},
    {"selectattr map",
     "{{ ms | selectattr('role', 'equalto', 'user') | map(attribute='content') | join(',') }}|{{ ms | rejectattr('role', 'equalto', 'user') | list | length }}|{{ ms | selectattr('tool') | list | length }}",
     "{\"ms\": [{\"role\": \"user\", \"content\": \"a\"}, {\"role\": \"assistant\", \"content\": \"b\", \"tool\": 1}, {\"role\": \"user\", \"content\": \"c\"}]}",
     "a,c|1|1"},
    {"tests",
     "{{ x is defined }}{{ y is defined }}{{ none is none }}{{ 'a' is string }}{{ {} is mapping }}{{ [] is iterable }}{{ 3 is odd }}{{ 4 is divisibleby 2 }}{{ 'a' is not none }}{{ 2 is equalto 2 }}",
     "{\"x\": 1}",
     "TrueFalseTrueTrueTrueTrueTrueTrueTrueTrue"},
    {"operators in and not",
     "{{ 'b' in 'abc' }}{{ 2 in [1, 2] }}{{ 'k' in {'k': 1} }}{{ 3 not in [1] }}{{ not true }}{{ true and 'x' }}{{ false or 'y' }}{{ 1 < 2 < 3 }}{{ 'a' if false else 'b' }}",
     "{}",
     "TrueTrueTrueTrueFalsexyTrueb"},
    {"indexing slicing attr",
     "{{ xs[0] }}{{ xs[-1] }}{{ xs[1:] }}{{ xs[::-1] }}{{ 'hello'[1:3] }}{{ d.k }}{{ d['k'] }}{{ d.missing is defined }}",
     "{\"xs\": [1, 2, 3], \"d\": {\"k\": \"v\"}}",
     "13[2, 3][3, 2, 1]elvvFalse"},
    {"string methods",
     "{{ ' a b '.strip() }}|{{ 'abc'.startswith('ab') }}{{ 'abc'.endswith('bc') }}|{{ 'a,b,,c'.split(',') }}|{{ ' a  b '.split() }}|{{ 'x'.upper() }}|{{ 'abc'.replace('b', 'B') }}|{{ 'hello world'.title() }}|{{ 'abc'.find('c') }}|{{ '-'.join(['a', 'b']) }}|{{ '<think>x</think>y'.split('</think>')[-1].lstrip() }}",
     "{}",
     "a b|TrueTrue|['a', 'b', '', 'c']|['a', 'b']|X|aBc|Hello World|2|a-b|y"},
    {"macro",
     "{% macro greet(name, punct='!') %}Hi {{ name }}{{ punct }}{% endmacro %}{{ greet('A') }} {{ greet('B', punct='?') }} {{ greet(name='C') }}",
     "{}",
     "Hi A! Hi B? Hi C!"},
    {"items dictsort unique",
     "{% for k, v in d | dictsort %}{{ k }}{{ v }}{% endfor %}|{{ d | items | list }}|{{ [3, 1, 3, 2] | unique | list }}|{{ [3, 1, 2] | sort }}|{{ [1, 2] | reverse | list }}",
     "{\"d\": {\"b\": 2, \"a\": 1}}",
     "a1b2|[('b', 2), ('a', 1)]|[3, 1, 2]|[1, 2, 3]|[2, 1]"},
    {"comments and raw text",
     "a{# comment #}b\n{#- trimmed -#}\n c",
     "{}",
     "abc"},
    {"int and float filters",
     "{{ '42' | int + 1 }}|{{ 'x' | int }}|{{ 3 | float }}|{{ 2.567 | round(2) }}|{{ -3 | abs }}|{{ [1, 2, 3] | sum }}|{{ [4, 2, 8] | max }}",
     "{}",
     "43|0|3.0|2.57|3|6|8"},
    {"indent filter",
     "{{ 'a\nb\n\nc' | indent(2) }}|{{ 'a\nb' | indent(2, true) }}",
     "{}",
     "a\n  b\n\n  c|  a\n  b"},
    {"string escapes in literals",
     "{{ 'a\\tb' }}|{{ \"q'\" }}|{{ 'x\\ny' | replace('\\n', ' ') }}",
     "{}",
     "a\tb|q'|x y"},
    {"dict literal with int keys",
     "{% set m = {1: 'one', 2: 'two'} %}{{ m[2] }}{{ m | tojson }}{% for k, v in m | dictsort %}{{ k + 1 }}{% endfor %}",
     "{}",
     "two{\"1\": \"one\", \"2\": \"two\"}23"},
    {"loop previtem nextitem cycle",
     "{% for x in [1, 2, 3] %}{{ loop.previtem }}-{{ loop.nextitem }}-{{ loop.cycle('a', 'b') }} {% endfor %}",
     "{}",
     "-2-a 1-3-b 2--a "},
    {"nested for over messages",
     "{% for m in messages %}{% if m.role == 'system' %}[S:{{ m.content }}]{% else %}[{{ m.role[0] | upper }}:{{ m['content'] }}]{% endif %}{% endfor %}{% if add_generation_prompt %}[A:{% endif %}",
     "{\"messages\": [{\"role\": \"system\", \"content\": \"s\"}, {\"role\": \"user\", \"content\": \"u\"}], \"add_generation_prompt\": true}",
     "[S:s][U:u][A:"},
    {"percent format and format filter",
     "{{ '%s-%d' % ('a', 3) }}|{{ '%s!' | format('hi') }}",
     "{}",
     "a-3|hi!"},
    {"filter block and generation",
     "{% filter upper %}abc{% endfilter %}|{% generation %}gen{% endgeneration %}",
     "{}",
     "ABC|gen"},
    {"markup from safe escapes what is added to it",
     "{{ \"fn '\"|safe + name + \"'\\n\"|safe + d | tojson }}|{{ ('<b>'|safe ~ '<i>') }}|{{ '<x>'|e }}|{{ ('a'|safe + 'b') | length }}",
     "{\"name\": \"a<b\", \"d\": {\"k\": \"\\\"v\\\"\"}}",
     "fn 'a&lt;b'\n{&#34;k&#34;: &#34;\\&#34;v\\&#34;&#34;}|<b><i>|&lt;x&gt;|2"},
    {"raw blocks",
     "a {% raw %}{{ x }}{% if %}{% endraw %} b|a\n  {% raw %}\n  {{ x }}\n  {% endraw %}\nb|a {%- raw -%}  {{ x }}  {%- endraw -%} b",
     "{}",
     "a {{ x }}{% if %} b|a\n\n  {{ x }}\nb|a{{ x }}b"},
};

Result<std::string> render(const std::string& source, const std::string& globals_json = "{}", Options options = {}) {
  auto t = Template::parse(source, options);
  if (!t) return t.status();
  auto globals = Value::from_json(globals_json);
  if (!globals) return globals.status();
  return t->render(*globals);
}

TEST(Jinja, MatchesJinja2OnEachFeature) {
  for (const Case& c : kCases) {
    auto out = render(c.source, c.globals_json);
    ASSERT_TRUE(out.is_ok()) << c.name << ": " << out.status().message();
    EXPECT_EQ(*out, c.expected) << c.name;
  }
}

TEST(Jinja, SyntaxErrorsNameLineAndColumn) {
  auto t = Template::parse("line one\n{% if x %}\n  {{ x + }}\n{% endif %}");
  ASSERT_FALSE(t.is_ok());
  EXPECT_NE(t.status().message().find("line 3, column 10"), std::string::npos) << t.status().message();
  for (const char* bad : {"{% if x %}", "{% for %}", "{{ 'unterminated }}", "{{ x", "{% endif %}", "{% unknown %}",
                          "{{ (1 }}", "{% set %}", "{% raw %}never closed", "{# open comment", "{{ x | }}", "{% macro m( %}{% endmacro %}"}) {
    EXPECT_FALSE(Template::parse(bad).is_ok()) << bad;
  }
}

TEST(Jinja, RuntimeErrorsAreStatusesWithPositions) {
  auto out = render("ok\n{{ raise_exception('Roles must alternate') }}");
  ASSERT_FALSE(out.is_ok());
  EXPECT_NE(out.status().message().find("Roles must alternate"), std::string::npos);
  EXPECT_NE(out.status().message().find("line 2"), std::string::npos) << out.status().message();
  for (const char* bad : {"{{ undefined_thing.attr }}", "{{ 1 / 0 }}", "{{ none + 1 }}", "{{ 'a' < 1 }}",
                          "{% for x in 3 %}{% endfor %}", "{{ x | no_such_filter }}", "{{ 1 is no_such_test }}",
                          "{{ [1].append(2) }}", "{{ {}.update({}) }}", "{% set a, b = [1] %}", "{{ nope() }}"}) {
    EXPECT_FALSE(render(bad).is_ok()) << bad;
  }
}

TEST(Jinja, WorkAndOutputAreBounded) {
  Options small;
  small.max_steps = 100000;
  small.max_output = 1 << 16;
  auto loop = render("{% for i in range(1000000) %}{% for j in range(1000000) %}{% endfor %}{% endfor %}", "{}", small);
  ASSERT_FALSE(loop.is_ok());
  EXPECT_NE(loop.status().message().find("steps"), std::string::npos) << loop.status().message();
  auto big = render("{% set ns = namespace(s='x') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s }}", "{}", small);
  ASSERT_FALSE(big.is_ok());
  EXPECT_NE(big.status().message().find("larger than"), std::string::npos) << big.status().message();
  EXPECT_FALSE(render("{{ 'ab' * 100000000 }}", "{}", small).is_ok());
  // Quadratic work is charged too: a growing list re-concatenated, unique and `in` over big lists.
  EXPECT_FALSE(render("{% set ns = namespace(l=[]) %}{% for i in range(100000) %}{% set ns.l = ns.l + [i] %}{% endfor %}", "{}", small).is_ok());
  EXPECT_FALSE(render("{{ range(50000) | unique | list | length }}", "{}", small).is_ok());
  // Values nested deeper than the limit (they would recurse when printed or destroyed), and a
  // namespace that holds itself (printing and comparing it must not recurse forever).
  auto deep = render("{% set ns = namespace(x=1) %}{% for i in range(100000) %}{% set ns.x = [ns.x] %}{% endfor %}");
  ASSERT_FALSE(deep.is_ok());
  EXPECT_NE(deep.status().message().find("nested deeper"), std::string::npos) << deep.status().message();
  auto cycle = render("{% set ns = namespace() %}{% set ns.me = ns %}");
  ASSERT_FALSE(cycle.is_ok());
  EXPECT_NE(cycle.status().message().find("cannot contain itself"), std::string::npos) << cycle.status().message();
  EXPECT_FALSE(render("{% set ns = namespace() %}{% set ns.l = [1, {'a': [ns]}] %}").is_ok());
  auto two = render("{% set a = namespace(v=1) %}{% set b = namespace(a=a) %}{% set a.v = 2 %}{{ b.a.v }} {{ [a] }} {{ a == a }}");
  ASSERT_TRUE(two.is_ok()) << two.status().message();
  EXPECT_EQ(*two, "2 [<Namespace {'v': 2}>] True");
  // Recursion: a macro calling itself forever, and expressions nested too deep to parse.
  EXPECT_FALSE(render("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}").is_ok());
  EXPECT_FALSE(Template::parse("{{ " + std::string(5000, '(') + "1" + std::string(5000, ')') + " }}").is_ok());
  EXPECT_FALSE(Template::parse(std::string(3000, '-') + "{{ " + std::string(3000, '[') + " }}").is_ok());
}

TEST(Jinja, JsonInputIsValidatedAndBounded) {
  auto v = Value::from_json(R"({"a": [1, 2.5, "x\u00e9\n", true, null], "b": {}})");
  ASSERT_TRUE(v.is_ok()) << v.status().message();
  std::string json;
  ASSERT_TRUE(v->to_json(json));
  EXPECT_EQ(json, "{\"a\": [1, 2.5, \"x\xc3\xa9\\n\", true, null], \"b\": {}}");
  for (const char* bad : {"", "[1,", "{\"a\" 1}", "[1] 2", "\"abc", "{\"a\": tru}", "[\"\\q\"]"}) {
    EXPECT_FALSE(Value::from_json(bad).is_ok()) << bad;
  }
  EXPECT_FALSE(Value::from_json(std::string(100000, '[')).is_ok());
}

// SmolLM2's tokenizer.chat_template as the model ships it (HuggingFaceTB/SmolLM2-135M-Instruct):
// a conversation without a system message gets the authors' default system prompt.
constexpr const char* kSmolLm2Template =
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\n"
    "You are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

TEST(ChatTemplate, ModelTemplateFirstFallbackOtherwise) {
  ChatTemplate t;
  t.source = kSmolLm2Template;
  std::string used;
  auto out = t.apply({{"user", "Hi"}}, true, &used);
  ASSERT_TRUE(out.is_ok());
  EXPECT_EQ(*out,
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
            "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
  EXPECT_EQ(used, "model template");
  out = t.apply({{"system", "Be brief."}, {"user", "Hi"}}, false, &used);
  ASSERT_TRUE(out.is_ok());
  EXPECT_EQ(*out, "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n");

  // A template that refuses the conversation, and no template at all: the built-in format.
  t.source = "{{ raise_exception('System role not supported') }}";
  t.fallback = ChatFormat::kGemma;
  out = t.apply({{"user", "Hi"}}, true, &used);
  ASSERT_TRUE(out.is_ok());
  EXPECT_EQ(*out, "<start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n");
  EXPECT_NE(used.find("built-in gemma"), std::string::npos) << used;
  EXPECT_NE(used.find("System role not supported"), std::string::npos) << used;
  // render(): any variables, the model's template only.
  t.source = "{{ bos_token }}{% for m in messages %}{{ m.role }}:{{ m.tool_calls[0].function.name if m.tool_calls else m.content }};{% endfor %}{{ tools | length }}";
  t.bos_token = "<s>";
  auto variables = Value::from_json(R"({"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "tool_calls": [{"function": {"name": "f"}}]}], "tools": [{}, {}]})");
  ASSERT_TRUE(variables.is_ok());
  auto rendered = t.render(*variables);
  ASSERT_TRUE(rendered.is_ok()) << rendered.status().message();
  EXPECT_EQ(*rendered, "<s>user:Hi;assistant:f;2");
  t.source.clear();
  EXPECT_FALSE(t.render(*variables).is_ok());
  out = t.apply({{"user", "Hi"}}, true, &used);
  ASSERT_TRUE(out.is_ok());
  EXPECT_NE(used.find("has no chat template"), std::string::npos) << used;
}

}  // namespace
}  // namespace frugal::jinja
