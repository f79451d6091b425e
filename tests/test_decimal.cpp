#include <gtest/gtest.h>

#include "decimal.h"

using namespace predictd;

namespace {
Decimal dec(const char* s) {
  auto d = Decimal::parse(s);
  if (!d) throw std::invalid_argument(s);
  return *d;
}
}  // namespace

TEST(Decimal, ParsesMantissaAndScale) {
  EXPECT_EQ(dec("0.0063").mantissa, 63);
  EXPECT_EQ(dec("0.0063").scale, 4);
  EXPECT_EQ(dec("12").mantissa, 12);
  EXPECT_EQ(dec("12").scale, 0);
  EXPECT_EQ(dec("0").mantissa, 0);
  EXPECT_EQ(dec("007.50").mantissa, 75);  // leading and trailing zeros carry no value
  EXPECT_EQ(dec("007.50").scale, 1);
  EXPECT_EQ(dec("999999999999999999").mantissa, 999999999999999999);
  EXPECT_EQ(dec("0.000000000000000001").scale, 18);
  EXPECT_EQ(dec("1.000000000000000000000").scale, 0);  // zeros do not count towards 18 digits
}

TEST(Decimal, RejectsWhatIsNotAPlainDecimal) {
  for (const char* bad : {"", ".", ".5", "5.", "-1", "+1", "1e3", "1E3", "1.2.3", "abc", " 1", "1 ", "0x10", "1,5",
                          "١", "1234567890123456789", "0.0000000000000000001", "123456789.1234567891", "inf", "NaN"})
    EXPECT_FALSE(Decimal::parse(bad)) << '"' << bad << '"';
}

TEST(Decimal, ToStringIsTheShortestExactForm) {
  EXPECT_EQ(dec("12").to_string(), "12");
  EXPECT_EQ(dec("0.50").to_string(), "0.5");
  EXPECT_EQ(dec("0.003").to_string(), "0.003");
  EXPECT_EQ(dec("0.0063").to_string(), "0.0063");
  EXPECT_EQ(dec("2.5").to_string(), "2.5");
  EXPECT_EQ(dec("10.0").to_string(), "10");
  EXPECT_EQ(dec("0").to_string(), "0");
  EXPECT_EQ(dec("0.000000000000000001").to_string(), "0.000000000000000001");
  // Also for values built by hand, not only parsed ones.
  EXPECT_EQ((Decimal{250, 2}).to_string(), "2.5");
  EXPECT_EQ((Decimal{100, 2}).to_string(), "1");
  for (const char* s : {"0.1", "123.456", "999999999999999999", "0.999999999999999999"})
    EXPECT_EQ(dec(s).to_string(), s);
}

TEST(Decimal, EqualityIsByValue) {
  EXPECT_EQ(dec("2.50"), dec("2.5"));
  EXPECT_EQ((Decimal{25, 1}), dec("2.500"));
  EXPECT_EQ((Decimal{0, 5}), dec("0"));
  EXPECT_EQ((Decimal{3000, 3}), dec("3"));
  EXPECT_FALSE(dec("2.5") == dec("25"));
  EXPECT_FALSE(dec("0.0063") == dec("0.063"));
  EXPECT_FALSE(dec("0.1") == dec("0.10000000000000001"));  // equal as doubles, not as decimals
}
