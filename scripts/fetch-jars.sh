#!/usr/bin/env bash
# Fetch the JVM jars from Maven Central once: the Kafka broker and tools into .jars/kafka, the
# Spark connectors into .jars/spark. Spark's folder keeps only jars that pyspark does not ship
# already, so the connectors never bring a second, older copy of a library onto Spark's classpath.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}

fetch() {  # fetch <pom dir> <destination>
  local pom=$1 dest=$2 stamp=$2/.stamp
  if [ -f "$stamp" ] && [ "$stamp" -nt "$pom/pom.xml" ]; then
    return 0
  fi
  rm -rf "$dest"
  mvn -q -B -Dstyle.color=never -f "$pom/pom.xml" dependency:copy-dependencies \
    -DincludeScope=runtime -DoutputDirectory="$PWD/$dest"
  touch "$stamp"
}

fetch jvm/kafka .jars/kafka

if [ ! -f .jars/spark/.stamp ] || [ .jars/spark/.stamp -ot jvm/spark/pom.xml ]; then
  fetch jvm/spark .jars/spark.all
  pyspark_jars=$("$PYTHON" -c 'import os, pyspark; print(os.path.join(os.path.dirname(pyspark.__file__), "jars"))')
  rm -rf .jars/spark && mkdir -p .jars/spark
  # An artifact's name is its file name less "-<version>.jar".
  shipped=$(ls "$pyspark_jars" | sed -E 's/-[0-9][^-]*(-[0-9]+)?\.jar$//' | sort -u)
  for jar in .jars/spark.all/*.jar; do
    name=$(basename "$jar" | sed -E 's/-[0-9][^-]*(-[0-9]+)?\.jar$//')
    if ! grep -qxF "$name" <<<"$shipped"; then
      cp "$jar" .jars/spark/
    fi
  done
  rm -rf .jars/spark.all
  touch .jars/spark/.stamp
fi
echo "jars: $(ls .jars/kafka | wc -l) in .jars/kafka, $(ls .jars/spark | wc -l) in .jars/spark"

# spark-submit reads $SPARK_HOME/conf/spark-defaults.conf; pointing it at the local jars there is
# what lets a plain `spark-submit jobs/aggregate.py` (venv active) find Delta and the Kafka source.
spark_home=$("$PYTHON" -c 'import os, pyspark; print(os.path.dirname(pyspark.__file__))')
mkdir -p "$spark_home/conf"
{
  echo "# Written by arus scripts/fetch-jars.sh"
  echo "spark.jars $(ls "$PWD"/.jars/spark/*.jar | paste -sd, -)"
  echo "spark.sql.extensions io.delta.sql.DeltaSparkSessionExtension"
  echo "spark.sql.catalog.spark_catalog org.apache.spark.sql.delta.catalog.DeltaCatalog"
  echo "spark.master local[2]"
  echo "spark.log.structuredLogging.enabled false"
  echo "spark.driver.extraJavaOptions -Dlog4j2.configurationFile=file:$PWD/conf/spark/log4j2.properties"
} > "$spark_home/conf/spark-defaults.conf"
echo "spark-submit defaults: $spark_home/conf/spark-defaults.conf"
