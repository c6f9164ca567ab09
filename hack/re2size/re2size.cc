// re2size prints RE2's ProgramSize() -- the number Envoy compares with its
// runtime key re2.max_program_size.error_level (100 unless raised) -- for
// each pattern read from stdin, one a line, or "ERR <message>" for a
// pattern RE2 refuses. It regenerates translator/testdata/re2-program-size.tsv
// (kind, RE2's size, pattern), against which TestProgramSizeAgainstRE2
// checks weft's estimate (translator/regex.go):
//
//   apt-get install libre2-dev
//   g++ -O1 -o /tmp/re2size hack/re2size/re2size.cc -lre2
//   f=translator/testdata/re2-program-size.tsv
//   grep -v '^#' $f | cut -f3 > /tmp/patterns
//   grep -v '^#' $f | cut -f1 | paste - <(/tmp/re2size < /tmp/patterns) /tmp/patterns > /tmp/new
//   (grep '^#' $f; cat /tmp/new) > $f
#include <re2/re2.h>

#include <iostream>
#include <string>

int main() {
  std::string line;
  while (std::getline(std::cin, line)) {
    RE2 re(line, RE2::Quiet);
    if (!re.ok()) {
      std::cout << "ERR " << re.error() << "\n";
      continue;
    }
    std::cout << re.ProgramSize() << "\n";
  }
}
